// Copy buttons of the settings pages: each copies the value of the field its data-copy
// attribute names. Without JavaScript the buttons stay hidden and the read-only fields
// can still be selected and copied by hand.
document.addEventListener("DOMContentLoaded", function () {
  var status = document.querySelector(".copy-status");
  function announce(text) {
    if (status) { status.textContent = text; }
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var labelElement = document.querySelector("label[for='" + field.id + "']");
      var label = labelElement ? labelElement.textContent : "Value";
      function copied() { button.textContent = "Copied"; announce(label + " copied to the clipboard."); }
      function byHand() {
        field.focus();
        field.select();
        try {
          if (document.execCommand("copy")) { copied(); return; }
        } catch (e) { /* fall through */ }
        announce("Press Ctrl+C (or ⌘C) to copy the selected text.");
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(copied, byHand);
      } else {
        byHand();
      }
    });
  });
});
