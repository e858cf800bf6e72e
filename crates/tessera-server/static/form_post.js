// Submits the form_post response automatically; without JavaScript the button does it.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("form_post");
  if (form) { form.submit(); }
});
