// Real browsers: headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// loads the generated client from the real `hubcast` binary (`/sdk/index.js`, the embedded
// compiled package) and two pages exchange group messages; then two pages click through the
// demo chat at `/` and a screenshot is saved under test-output/ (gitignored).
//
// Run through `scripts/test`, or by hand after `cargo build -p hubcast-server`:
//   cd integration-tests/node && npm ci && node --test browser.test.mjs
// The browser is `$CHROMIUM`, by default /usr/bin/chromium (`apt-get install chromium`).

import assert from "node:assert/strict";
import { existsSync, mkdirSync, statSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { SHUTDOWN_TIMEOUT_MS, STARTUP_TIMEOUT_MS, STEP_TIMEOUT_MS, Server, eventually } from "./support/hubcast.mjs";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OUTPUT_DIR = fileURLToPath(new URL("./test-output/", import.meta.url));

/** Starts the generated client in `page` (already on the server's origin) as `window.hc`. */
async function startClient(page, { user, group, protocol }) {
  return page.evaluate(
    async ({ user, group, protocol }) => {
      const { HubcastClient } = await import("/sdk/index.js");
      const getUrl = async () => {
        const response = await fetch(`/dev/token?hub=browser&user=${encodeURIComponent(user)}`);
        if (!response.ok) throw new Error(`GET /dev/token: ${response.status}`);
        return (await response.json()).url;
      };
      const client = new HubcastClient(getUrl, { protocol });
      const received = [];
      client.on("group-message", (e) => received.push({ from: e.message.fromUserId, dataType: e.message.dataType, data: e.message.data }));
      window.hc = { client, received };
      await client.start();
      await client.joinGroup(group);
      return { connectionId: client.connectionId, userId: client.userId, subprotocol: client.subprotocol };
    },
    { user, group, protocol },
  );
}

describe("the generated client and the demo page in headless Chromium", { timeout: 180_000 }, () => {
  const server = new Server({ args: ["--dev"] });
  let browser;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM)`);
    await server.start();
    await eventually(() => /DEVELOPMENT MODE/.test(server.stderr), "--dev logs a loud warning");
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
      timeout: STARTUP_TIMEOUT_MS,
    });
  }, { timeout: 2 * STARTUP_TIMEOUT_MS });

  after(async () => {
    await browser?.close();
    await server.stop();
  }, { timeout: SHUTDOWN_TIMEOUT_MS + 10_000 });

  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 900, height: 760 } });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    await page.goto(`${server.baseUrl}/`);
    return { page, errors };
  }

  test("two pages exchange group messages through the generated client", async () => {
    const a = await newPage();
    const b = await newPage();
    const infoA = await startClient(a.page, { user: "ada", group: "g", protocol: "json" });
    const infoB = await startClient(b.page, { user: "bo", group: "g", protocol: "json" });
    assert.equal(infoA.userId, "ada");
    assert.equal(infoB.userId, "bo");
    assert.equal(infoA.subprotocol, "json.webpubsub.azure.v1");
    assert.notEqual(infoA.connectionId, infoB.connectionId);

    await a.page.evaluate(() => window.hc.client.sendToGroup("g", { text: "hello from a browser" }, "json"));
    await b.page.waitForFunction(() => window.hc.received.some((m) => m.data?.text === "hello from a browser"));
    await b.page.evaluate(() => window.hc.client.sendToGroup("g", new Uint8Array([1, 2, 3]), "binary"));
    await a.page.waitForFunction(() => window.hc.received.some((m) => m.dataType === "binary"));
    const atA = await a.page.evaluate(() => window.hc.received.map((m) => ({ ...m, data: m.data instanceof Uint8Array ? [...m.data] : m.data })));
    assert.deepEqual(atA, [
      { from: "ada", dataType: "json", data: { text: "hello from a browser" } },
      { from: "bo", dataType: "binary", data: [1, 2, 3] },
    ]);
    for (const p of [a, b]) {
      await p.page.evaluate(() => window.hc.client.stop());
      assert.deepEqual(p.errors, []);
      await p.page.context().close();
    }
  });

  test("the demo chat: two tabs join a room and talk; screenshot saved", async () => {
    const tabs = [await newPage(), await newPage()];
    const names = ["alice", "bob"];
    for (const [i, { page }] of tabs.entries()) {
      await page.fill("#name", names[i]);
      await page.fill("#room", "lobby");
      await page.click("#connect");
      await page.waitForSelector('#status[data-state="Connected"]');
      await page.waitForSelector("#messages li.system >> text=joined");
      assert.match(await page.textContent("#status"), new RegExp(`Connected as ${names[i]}`));
    }
    const [alice, bob] = tabs.map((t) => t.page);
    await alice.fill("#message", "Hi Bob, this is Hubcast!");
    await alice.press("#message", "Enter");
    await bob.waitForSelector("#messages li >> text=Hi Bob, this is Hubcast!");
    await bob.fill("#message", "Hello Alice — ça va?");
    await bob.click("#send");
    await alice.waitForSelector("#messages li.mine >> text=Hi Bob, this is Hubcast!");
    await alice.waitForSelector("#messages li >> text=Hello Alice");
    const atBob = await bob.$$eval("#messages li:not(.system)", (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(atBob, ["aliceHi Bob, this is Hubcast!", "bobHello Alice — ça va?"]);

    mkdirSync(OUTPUT_DIR, { recursive: true });
    const shot = `${OUTPUT_DIR}demo-chat.png`;
    await bob.screenshot({ path: shot, fullPage: true });
    assert.ok(statSync(shot).size > 10_000, "the screenshot has content");

    await alice.click("#disconnect");
    await alice.waitForSelector('#status[data-state="Stopped"]');
    for (const t of tabs) {
      assert.deepEqual(t.errors, []);
      await t.page.context().close();
    }
  });
});
