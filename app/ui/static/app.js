// Forms marked data-drop-empty send only the fields a person filled in (the upload API treats
// an empty `format` or `name` as given).
document.addEventListener("htmx:configRequest", (event) => {
  const form = event.detail.elt;
  if (!form.matches || !form.matches("form[data-drop-empty]")) return;
  for (const [name, value] of Array.from(event.detail.formData.entries())) {
    if (value === "") event.detail.formData.delete(name);
  }
});

// Forms with data-confirm ask first (cancelling a job cannot be undone). A listener, not an inline
// handler: the pages' Content-Security-Policy allows no inline script.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
