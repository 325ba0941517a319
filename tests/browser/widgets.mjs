// Drives cardgate's widgets in headless Chromium (Debian's `chromium`) through host pages on
// an allowed and a disallowed origin. Started by crates/cardgate/tests/api/widgets.rs, which
// runs a cardgate with the fixture tenant `acme` whose widget_origins is the allowed host.
// Exits non-zero on the first failed check. Environment: CARDGATE_BASE, HOST_PORT, EVIL_PORT,
// WIDGETS_KEY, BACKEND_BASIC ("id:secret"), CARD, CARD_INACTIVE, CARD_BOB, PAN,
// SCREENSHOTS (a folder), CHROMIUM (default /usr/bin/chromium).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => { const v = process.env[k]; if (!v) { throw new Error(`${k} is not set`); } return v; };
const BASE = env('CARDGATE_BASE');
const HOST = `http://127.0.0.1:${env('HOST_PORT')}`;
const EVIL = `http://127.0.0.1:${env('EVIL_PORT')}`;
const CARD = env('CARD'), INACTIVE = env('CARD_INACTIVE'), BOB = env('CARD_BOB'), PAN = env('PAN');
const SHOTS = env('SCREENSHOTS');
let passed = 0;
function check(cond, what) {
  if (!cond) { throw new Error(`FAILED: ${what}`); }
  passed += 1;
  console.log(`ok ${passed} - ${what}`);
}

// The host page: loads embed.js from cardgate and mounts the widget its query names; records
// what it hears from the frame, and whether it can read into it.
const hostPage = `<!doctype html><html><head><meta charset="utf-8"><title>Host</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="${BASE}/widgets/v1/embed.js"></script></head>
<body style="margin:0;font-family:sans-serif"><div id="mount"></div><script>
window.heard = [];
const q = new URLSearchParams(location.search);
const o = JSON.parse(q.get('o'));
o.onReady = () => heard.push({ type: 'ready' });
o.onSuccess = () => heard.push({ type: 'success' });
o.onError = (code) => heard.push({ type: 'error', code });
window.addEventListener('message', (e) => heard.push({ raw: JSON.stringify(e.data), origin: e.origin }));
window.widget = CardgateWidgets.mount(document.getElementById('mount'), o);
window.peek = () => { try { const d = widget.iframe.contentDocument; return d ? d.body.innerText : 'null'; } catch (e) { return 'blocked'; } };
</script></body></html>`;
function serve(port) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(hostPage);
  });
  return new Promise((ok) => server.listen(Number(port), '127.0.0.1', () => ok(server)));
}

async function widgetToken(card, type) {
  const res = await fetch(`${BASE}/synctera/v1/cards/${card}/widget_token?widget_type=${type}`,
    { method: 'POST', headers: { Authorization: `Bearer ${env('WIDGETS_KEY')}` } });
  const body = await res.json();
  if (res.status !== 200) { throw new Error(`widget_token ${type}: ${res.status} ${JSON.stringify(body)}`); }
  return body;
}
async function nativeToken(card, operations, ttl) {
  const res = await fetch(`${BASE}/v1/cards/${card}/tokens`, {
    method: 'POST',
    headers: { Authorization: 'Basic ' + Buffer.from(env('BACKEND_BASIC')).toString('base64'), 'content-type': 'application/json' },
    body: JSON.stringify({ operations, ttl_seconds: ttl })
  });
  const body = await res.json();
  if (res.status !== 201) { throw new Error(`native token: ${res.status} ${JSON.stringify(body)}`); }
  return body.token;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync']
});
const servers = [await serve(env('HOST_PORT')), await serve(env('EVIL_PORT'))];
fs.mkdirSync(SHOTS, { recursive: true });
const DESKTOP = { width: 1024, height: 640 }, PHONE = { width: 360, height: 640 };

async function open(host, options, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`${host}/?o=${encodeURIComponent(JSON.stringify({ tenant: 'acme', ...options }))}`);
  const frame = await (await page.waitForSelector('iframe')).contentFrame();
  return { context, page, frame };
}
async function statusText(frame) {
  await frame.waitForFunction(() => { const m = document.getElementById('cg'); return m && m.dataset.state !== 'loading'; });
  return frame.locator('#cg-status').innerText();
}
async function heard(page) { return page.evaluate(() => window.heard); }
function noCardData(messages, secrets, what) {
  const text = JSON.stringify(messages);
  check(secrets.every((s) => !text.includes(s)), `${what}: the host hears no card data or PIN`);
}
async function shoot(name, host, options) {
  for (const [size, viewport] of [['desktop', DESKTOP], ['phone', PHONE]]) {
    const { context, page, frame } = await open(host, await options(), viewport);
    await frame.waitForFunction(() => document.getElementById('cg').dataset.state !== 'loading');
    await page.screenshot({ path: path.join(SHOTS, `${name}-${size}.png`) });
    const wide = await frame.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    check(wide, `${name} at ${size} width fits without horizontal scrolling`);
    await context.close();
  }
}

try {
  // 1. Reveal: the data appears inside the frame; the host cannot read it.
  let t = await widgetToken(CARD, 'REVEAL');
  let w = await open(HOST, { type: 'reveal', token: t.widget_token, card: CARD, tenant: t.tenant,
    labels: { title: 'Your Acme card' }, theme: { accent: '#006b3c', fontFamily: 'Georgia, serif' } });
  await w.frame.waitForSelector('#cg-reveal:not([hidden])');
  const pan = await w.frame.locator('#cg-pan').innerText();
  check(pan.replace(/ /g, '') === PAN, 'reveal: the PAN appears inside the iframe');
  check((await w.frame.locator('#cg-title').innerText()) === 'Your Acme card', 'reveal: the host overrides a label');
  const accent = await w.frame.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--cg-accent').trim());
  check(accent === '#006b3c', 'reveal: the host themes the widget');
  check((await w.page.evaluate(() => window.peek())) !== PAN && !(await w.page.evaluate(() => window.peek())).includes(PAN.slice(0, 8)),
    'reveal: the host page cannot read into the iframe');
  const pageText = await w.page.evaluate(() => document.body.innerText + document.documentElement.outerHTML);
  check(!pageText.includes(PAN) && !pageText.includes(PAN.match(/.{4}/g).join(' ')), 'reveal: the host document holds no PAN');
  await w.page.waitForFunction(() => window.heard.some((m) => m.type === 'success'));
  const msgs = await heard(w.page);
  check(msgs.some((m) => m.type === 'ready') && msgs.some((m) => m.type === 'success'), 'reveal: the host hears ready and success');
  check(msgs.filter((m) => m.origin).every((m) => m.origin === BASE), 'reveal: messages come from cardgate only');
  noCardData(msgs, [PAN, PAN.slice(-4) + '"', '"123"'], 'reveal');
  // Contrast of the default palette (WCAG 2.1 relative luminance) in the rendered page.
  const ratios = await w.frame.evaluate(() => {
    const lum = (c) => {
      const [r, g, b] = c.match(/[0-9.]+/g).slice(0, 3).map(Number).map((v) => v / 255)
        .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
    const bg = getComputedStyle(document.body).backgroundColor;
    return ['#cg-title', '#cg-pan', '#cg-pan-label', '.cg-copy'].map((sel) => {
      const el = document.querySelector(sel);
      return [sel, ratio(getComputedStyle(el).color, bg)];
    });
  });
  check(ratios.every(([, r]) => r >= 4.5), `reveal: text contrast at least 4.5:1 (${ratios.map(([s, r]) => s + ' ' + r.toFixed(1)).join(', ')})`);
  // Reloading shows the link as used.
  await w.page.reload();
  const again = await (await w.page.waitForSelector('iframe')).contentFrame();
  check((await statusText(again)).includes('has been used'), 'reveal: a reload shows "this link has been used"');
  check(await again.locator('#cg-reveal').isHidden(), 'reveal: nothing is shown after use');
  await w.context.close();

  // 2. A host page on an origin that is not allowed cannot show the widget (and spends nothing).
  t = await widgetToken(CARD, 'REVEAL');
  for (const origin of [undefined, HOST]) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const o = { type: 'reveal', token: t.widget_token, card: CARD, tenant: 'acme' };
    await page.goto(`${EVIL}/?o=${encodeURIComponent(JSON.stringify(o))}`);
    if (origin) {
      // The evil page claims the allowed origin in the widget URL: frame-ancestors still refuses.
      await page.evaluate((h) => { const f = window.widget.iframe; f.src = f.src.replace(/origin=[^&#]*/, 'origin=' + encodeURIComponent(h)); }, origin);
    }
    await page.waitForTimeout(1500);
    const texts = await Promise.all(page.frames().map((f) => f.evaluate(() => document.body ? document.body.innerText : '').catch(() => '')));
    check(texts.every((x) => !x.includes(PAN.slice(0, 4) + ' ')), `disallowed origin${origin ? ' claiming an allowed one' : ''}: no card data is shown`);
    check((await heard(page)).length === 0, `disallowed origin${origin ? ' claiming an allowed one' : ''}: hears nothing`);
    await ctx.close();
  }
  w = await open(HOST, { type: 'reveal', token: t.widget_token, card: CARD, tenant: 'acme' });
  await w.frame.waitForSelector('#cg-reveal:not([hidden])');
  check(true, 'the token the disallowed host held was not spent');
  await w.context.close();

  // 3. An expired token shows its message.
  const short = await nativeToken(CARD, ['VIEW_CARD'], 1);
  await new Promise((r) => setTimeout(r, 1500));
  w = await open(HOST, { type: 'reveal', token: short, card: CARD });
  check((await statusText(w.frame)).includes('expired'), 'an expired token shows "this link has expired"');
  noCardData(await heard(w.page), [PAN], 'expired');
  check((await heard(w.page)).some((m) => m.type === 'error' && m.code === 'expired'), 'expired: the host hears error(expired)');
  await w.context.close();

  // 4. Set a PIN through the widget (trivial, mismatched, non-numeric and oversized refused),
  //    then reveal it through the get-pin widget.
  t = await widgetToken(CARD, 'SET_PIN');
  w = await open(HOST, { type: 'set-pin', token: t.widget_token, card: CARD });
  await w.frame.waitForSelector('#cg-set-pin:not([hidden])');
  for (const [a, b, expect, what] of [
    ['1234', '1234', 'too easy', 'a trivial PIN (1234)'], ['0000', '0000', 'too easy', 'a trivial PIN (0000)'],
    ['12a4', '12a4', 'digits only', 'a non-numeric PIN'], ['123', '123', 'digits only', 'a short PIN'],
    ['5802', '5803', 'do not match', 'two different PINs']]) {
    await w.frame.fill('#cg-new-pin', a);
    await w.frame.fill('#cg-confirm-pin', b);
    await w.frame.click('#cg-set-pin-button');
    check((await w.frame.locator('#cg-pin-error').innerText()).includes(expect), `set-pin: ${what} is refused with a clear message`);
  }
  await w.frame.evaluate(() => { const i = document.getElementById('cg-new-pin'); i.removeAttribute('maxlength'); });
  await w.frame.fill('#cg-new-pin', '1357913579135');
  await w.frame.fill('#cg-confirm-pin', '1357913579135');
  await w.frame.click('#cg-set-pin-button');
  check((await w.frame.locator('#cg-pin-error').innerText()).includes('digits only'), 'set-pin: an oversized PIN is refused');
  // Keyboard only: type, tab, type, Enter.
  await w.frame.focus('#cg-new-pin');
  await w.page.keyboard.press('Control+A');
  await w.page.keyboard.type('5802');
  await w.page.keyboard.press('Tab');
  check(await w.frame.evaluate(() => document.activeElement.id === 'cg-confirm-pin'), 'set-pin: Tab moves to the second field');
  await w.page.keyboard.type('5802');
  await w.page.keyboard.press('Enter');
  await w.frame.waitForFunction(() => document.getElementById('cg').dataset.state === 'done');
  check((await w.frame.locator('#cg-status').innerText()).includes('new PIN is set'), 'set-pin: the PIN is set from the keyboard');
  noCardData(await heard(w.page), ['5802'], 'set-pin');
  await w.context.close();

  t = await widgetToken(CARD, 'GET_PIN');
  w = await open(HOST, { type: 'get-pin', token: t.widget_token, card: CARD, hideAfter: 2 });
  await w.frame.click('#cg-show-pin');
  await w.frame.waitForFunction(() => document.getElementById('cg-pin').textContent !== '••••');
  check((await w.frame.locator('#cg-pin').innerText()) === '5802', 'get-pin: the PIN set through the widget is the PIN revealed');
  await w.frame.waitForFunction(() => document.getElementById('cg-pin').textContent === '••••', null, { timeout: 5000 });
  check(true, 'get-pin: the PIN is hidden again after the host\'s delay');
  noCardData(await heard(w.page), ['5802'], 'get-pin');
  await w.context.close();

  // 5. Activation, and a wrong widget for the card's state.
  t = await widgetToken(INACTIVE, 'ACTIVATE');
  const spare = await widgetToken(INACTIVE, 'ACTIVATE');
  w = await open(HOST, { type: 'activate', token: t.widget_token, card: INACTIVE });
  await w.frame.focus('#cg-activate-button');
  await w.page.keyboard.press('Enter');
  await w.frame.waitForFunction(() => ['done', 'error'].includes(document.getElementById('cg').dataset.state));
  check((await w.frame.locator('#cg-status').innerText()).includes('is active'), 'activate: the card is activated from the keyboard');
  await w.context.close();
  w = await open(HOST, { type: 'activate', token: spare.widget_token, card: INACTIVE });
  await w.frame.click('#cg-activate-button');
  await w.frame.waitForFunction(() => ['done', 'error'].includes(document.getElementById('cg').dataset.state));
  check((await statusText(w.frame)).includes('cannot do this now'), 'activate on an active card: a clear message');
  await w.context.close();

  // 6. Bad links: no fragment, a token for another operation or card, an unknown widget.
  const bad = [
    [{ type: 'reveal', token: '', card: CARD }, 'incomplete', 'a missing token'],
    [{ type: 'reveal', token: (await widgetToken(CARD, 'GET_PIN')).widget_token, card: CARD }, 'not for this card or this action', 'a token for another operation'],
    [{ type: 'reveal', token: (await widgetToken(CARD, 'REVEAL')).widget_token, card: BOB }, 'not for this card or this action', 'a token for another card'],
  ];
  for (const [o, expect, what] of bad) {
    w = await open(HOST, o);
    check((await statusText(w.frame)).includes(expect), `${what}: a clear message in the page`);
    noCardData(await heard(w.page), [PAN], what);
    await w.context.close();
  }
  {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    await page.goto(`${BASE}/widgets/v1/reveal?tenant=acme&origin=${encodeURIComponent(HOST)}`);
    check((await page.locator('#cg-status').innerText()).includes('incomplete'), 'a page opened without a fragment says so');
    const res = await page.goto(`${BASE}/widgets/v1/nope?tenant=acme&origin=${encodeURIComponent(HOST)}`);
    check(res.status() === 404 && (await page.locator('#cg-status').innerText()).includes('no such widget'), 'an unknown widget: a clear page');
    await ctx.close();
  }

  // 7. Screenshots of each widget at desktop and phone sizes.
  const fresh = (type, card, widgetType) => async () => ({ type, card, token: (await widgetToken(card, widgetType)).widget_token });
  await shoot('reveal', HOST, fresh('reveal', CARD, 'REVEAL'));
  await shoot('get-pin', HOST, fresh('get-pin', CARD, 'GET_PIN'));
  await shoot('set-pin', HOST, fresh('set-pin', CARD, 'SET_PIN'));
  await shoot('activate', HOST, async () => ({ type: 'activate', card: INACTIVE, token: await nativeToken(INACTIVE, ['ACTIVATE'], 60).catch(() => 'cgct_unused_token_for_the_picture') }));
  await shoot('used-link', HOST, async () => ({ type: 'reveal', token: t.widget_token, card: INACTIVE }));
  console.log(`# ${passed} browser checks passed`);
} finally {
  await browser.close();
  servers.forEach((s) => s.close());
}
