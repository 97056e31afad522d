// The keys page: "Test" checks the key typed in a card without saving it, and
// leaves the field as it is. Without JavaScript the same button posts the form,
// and the page says whether the key works.
"use strict";

(function () {
  for (const form of document.querySelectorAll("form.key-form")) {
    const test = form.querySelector('button[value="test"]');
    const result = form.querySelector(".key-test-result");
    if (!test || !result) continue;
    test.addEventListener("click", async (event) => {
      event.preventDefault();
      const provider = form.closest(".key-card").id.replace(/^key-/, "");
      const key = form.querySelector('input[name="key"]');
      const baseUrl = form.querySelector('input[name="base_url"]');
      const body = { base_url: baseUrl ? baseUrl.value : "" };
      // The masked value stands for the saved key: test that one.
      if (key.value && key.value !== key.defaultValue) body.key = key.value;
      test.disabled = true;
      result.hidden = false;
      result.className = "key-test-result alert";
      result.textContent = "Testing…";
      let answer;
      try {
        const response = await fetch("/api/keys/" + encodeURIComponent(provider) + "/test", {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            "X-CSRFToken": form.querySelector('input[name="csrfmiddlewaretoken"]').value,
          },
          body: JSON.stringify(body),
        });
        answer = await response.json();
        if (answer.error) answer = { valid: false, message: answer.error.message };
      } catch (err) {
        answer = { valid: false, message: "The test could not reach the server." };
      } finally {
        test.disabled = false;
      }
      result.className = "key-test-result alert" + (answer.valid ? "" : " alert-error");
      const works = body.key ? "The key works. Save it to use it." : "Your saved key works.";
      result.textContent = answer.valid ? works : answer.message;
    });
  }
})();
