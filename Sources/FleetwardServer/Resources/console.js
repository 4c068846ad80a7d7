// Fleetward console: the only script, served from /console/static (the Content-Security-Policy
// allows no inline script). The console works without it; it only adds conveniences.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Changing the state filter applies it at once.
  const state = document.getElementById("filter-state");
  if (state && state.form) {
    state.addEventListener("change", () => state.form.submit());
  }
  // A confirmation form's button can be pressed once.
  for (const form of document.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", () => {
      for (const button of form.querySelectorAll("button")) button.disabled = true;
    });
  }
});
