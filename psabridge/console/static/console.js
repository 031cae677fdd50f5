// The console's few behaviours that need a script (no inline script: the CSP forbids it).
// A "select all" checkbox ticks the boxes its data-selects names; a search box with
// data-filters hides the options of those drop-downs whose text does not contain it.
document.addEventListener("change", (event) => {
  const box = event.target.closest("input[data-selects]");
  if (!box) return;
  for (const other of document.querySelectorAll(box.dataset.selects)) other.checked = box.checked;
});
document.addEventListener("input", (event) => {
  const field = event.target.closest("input[data-filters]");
  if (!field) return;
  const needle = field.value.trim().toLowerCase();
  for (const select of document.querySelectorAll(field.dataset.filters)) {
    for (const option of select.querySelectorAll("optgroup option")) {
      option.hidden = needle !== "" && !option.textContent.toLowerCase().includes(needle);
    }
  }
});
