// The Django admin as a person uses it: log in through the login form, then open each console
// page, optionally fill and submit its form (a plugin test run, a dead-letter replay), and take a
// full-page screenshot. For each page: the document's status, every stylesheet's answer, a style
// only the admin's CSS sets (the header's background), what the page shows, and console errors.
//
// Input: {"base", "username", "password", "screenshots", "pages": [{"name", "path", "form"?,
// "expect"?}]}, where form is {"fill": {selector: text}, "check": [selector],
// "select": {selector: value}, "submit": selector} and expect a list of selectors to count.
import path from "node:path";

import { launch, record } from "./chromium.mjs";
import { main } from "./scenario.mjs";

async function snapshot(page, recorder, response, spec) {
  const shown = await page.evaluate((selectors) => {
    const main = document.querySelector("#content") || document.body;
    const header = document.querySelector("#header");
    const counts = Object.fromEntries(selectors.map((selector) => [selector, document.querySelectorAll(selector).length]));
    return {
      title: document.title,
      header_background: header ? getComputedStyle(header).backgroundColor : null,
      messages: [...document.querySelectorAll("ul.messagelist li, .errornote, .errorlist li")].map((node) => node.textContent.trim()),
      preformatted: [...document.querySelectorAll("pre")].map((node) => node.textContent),
      counts,
      text: main.innerText.slice(0, 400),
    };
  }, spec.expect || []);
  const stylesheets = recorder
    .requests()
    .filter((request) => request.type === "Stylesheet")
    .map(({ url, status, content_type, failure }) => ({ url, status, content_type, failure }));
  return { url: page.url(), status: response ? response.status() : null, stylesheets, ...shown };
}

async function submit(page, form) {
  for (const [selector, text] of Object.entries(form.fill || {})) {
    await page.$eval(selector, (node, value) => { node.value = value; }, text);
  }
  for (const selector of form.check || []) await page.click(selector);
  for (const [selector, value] of Object.entries(form.select || {})) await page.select(selector, value);
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click(form.submit)]);
  return response;
}

async function visit(browser, base, screenshots, spec) {
  const page = await browser.newPage();
  const recorder = await record(page);
  let response = await page.goto(`${base}${spec.path}`, { waitUntil: "load" });
  const opened = await snapshot(page, recorder, response, spec);
  let submitted = null;
  let formError = null;
  if (spec.form) {
    try {
      response = await submit(page, spec.form);
      await recorder.settle();
      submitted = await snapshot(page, recorder, response, spec);
    } catch (error) {
      formError = String(error.message || error);
    }
  }
  const screenshot = path.join(screenshots, `${spec.name}.png`);
  await page.screenshot({ path: screenshot, fullPage: true });
  await page.close();
  return { name: spec.name, opened, submitted, form_error: formError, screenshot, console_errors: recorder.consoleErrors };
}

main(async ({ base, username, password, screenshots, pages }) => {
  const { browser, close } = await launch();
  try {
    const page = await browser.newPage();
    const recorder = await record(page);
    await page.goto(`${base}/admin/login/?next=/admin/`, { waitUntil: "load" });
    await page.type("#id_username", username);
    await page.type("#id_password", password);
    const [response] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("input[type=submit]")]);
    const login = await snapshot(page, recorder, response, { expect: ["#user-tools"] });
    await page.screenshot({ path: path.join(screenshots, "admin-index.png"), fullPage: true });
    const login_console_errors = recorder.consoleErrors;
    await page.close();
    const visits = [];
    for (const spec of pages) visits.push(await visit(browser, base, screenshots, spec));
    return { login, login_console_errors, visits };
  } finally {
    await close();
  }
});
