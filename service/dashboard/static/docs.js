// The API reference (/docs): Swagger UI over the service's own OpenAPI document.
// A file, not an inline script, so that a strict Content-Security-Policy allows it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null,  // its badge is an image from an outside validator: nothing leaves this server
  });
});
