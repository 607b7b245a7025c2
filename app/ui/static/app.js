// Forms marked data-drop-empty send only the fields a person filled in (the upload API treats
// an empty `format` or `name` as given).
document.addEventListener("htmx:configRequest", (event) => {
  const form = event.detail.elt;
  if (!form.matches || !form.matches("form[data-drop-empty]")) return;
  for (const [name, value] of Array.from(event.detail.formData.entries())) {
    if (value === "") event.detail.formData.delete(name);
  }
});
