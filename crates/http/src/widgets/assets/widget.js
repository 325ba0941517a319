// cardgate widget pages (SPEC §5). Reads the card token from the URL fragment, redeems it once
// with an Authorization header at the native redemption endpoints, and shows the answer only
// inside this frame. The parent hears `ready`, `success` and `error` by postMessage, aimed at
// the origin the server allowed, and never any card data or PIN.
(function () {
  'use strict';
  var root = document.getElementById('cg');
  var widget = root.getAttribute('data-widget');
  var origin = root.getAttribute('data-origin');
  var status = document.getElementById('cg-status');
  var TEXT = {
    used: 'This link has been used. Ask for a new one to try again.',
    expired: 'This link has expired. Ask for a new one.',
    revoked: 'This link has been withdrawn. Ask for a new one.',
    invalid: 'This link is not valid.',
    missing: 'This link is incomplete: it carries no card token.',
    wrong: 'This link is not for this card or this action.',
    state: 'This card cannot do this now.',
    notfound: 'This card was not found.',
    unavailable: 'The service is busy. Please try again in a moment.',
    failed: 'Something went wrong. Please try again later.',
    copied: 'Copied.',
    pin_hidden: 'Your PIN is hidden again. This link has been used.',
    pin_shown: 'Your PIN is shown for a few seconds.',
    pin_set: 'Your new PIN is set.',
    activated: 'Your card is active.',
    pin_digits: 'Use digits only, 4 to 12 of them.',
    pin_mismatch: 'The two PINs do not match.',
    pin_trivial: 'This PIN is too easy to guess (such as 0000 or 1234). Choose another.',
    loading: 'Loading…'
  };

  function tell(type, code) {
    if (!origin || window.parent === window) { return; }
    var msg = { source: 'cardgate', widget: widget, type: type };
    if (code) { msg.code = code; }
    window.parent.postMessage(msg, origin);
  }

  function say(text, state) {
    status.textContent = text;
    if (state) { root.setAttribute('data-state', state); }
  }

  if (widget === 'none') { return; }

  var params = new URLSearchParams(window.location.hash.replace(/^#/, ''));
  var token = params.get('token') || '';
  var card = params.get('card') || '';
  var hideAfter = Math.min(Math.max(parseInt(params.get('hide_after') || '5', 10) || 5, 1), 60);

  // Host overrides: labels (text only) and theme (CSS custom properties, set through the
  // CSSOM, which the CSP allows, never as markup).
  function json(name) {
    try { var v = JSON.parse(params.get(name) || '{}'); return v && typeof v === 'object' ? v : {}; } catch (e) { return {}; }
  }
  var labels = json('labels');
  Object.keys(labels).forEach(function (k) {
    var v = labels[k];
    if (typeof v !== 'string' || v.length > 120) { return; }
    if (Object.prototype.hasOwnProperty.call(TEXT, k)) { TEXT[k] = v; }
    document.querySelectorAll('[data-label="' + k.replace(/[^a-z_]/g, '') + '"]').forEach(function (el) { el.textContent = v; });
  });
  if (labels.title && typeof labels.title === 'string') { document.title = labels.title.slice(0, 120); }
  var theme = json('theme');
  var COLOR = /^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}|rgba?\([0-9., %]{5,40}\))$/;
  var FONT = /^[a-zA-Z0-9 ,"'-]{1,100}$/;
  var SIZE = /^[0-9]{1,2}(\.[0-9])?(px|rem|em)$/;
  var themed = { background: ['--cg-bg', COLOR], color: ['--cg-fg', COLOR], muted: ['--cg-muted', COLOR],
    accent: ['--cg-accent', COLOR], accentText: ['--cg-accent-fg', COLOR], error: ['--cg-error', COLOR],
    fontFamily: ['--cg-font', FONT], fontSize: ['--cg-size', SIZE], radius: ['--cg-radius', SIZE] };
  Object.keys(themed).forEach(function (k) {
    var v = theme[k];
    if (typeof v === 'string' && themed[k][1].test(v)) { document.documentElement.style.setProperty(themed[k][0], v); }
  });

  // A used link stays used when the page is reloaded (a marker of the token, not the token).
  function mark() {
    var h = 2166136261;
    for (var i = 0; i < token.length; i++) { h ^= token.charCodeAt(i); h = Math.imul(h, 16777619) >>> 0; }
    return 'cardgate-used:' + widget + ':' + h.toString(16);
  }
  function wasUsed() { try { return window.sessionStorage.getItem(mark()) === '1'; } catch (e) { return false; } }
  function setUsed() { try { window.sessionStorage.setItem(mark(), '1'); } catch (e) { /* storage off */ } }

  function fail(code) {
    var text = TEXT[code] || TEXT.failed;
    say(text, code === 'used' ? 'used' : 'error');
    tell('error', code);
  }

  // The outcome of a refused redemption, from the native API's error.
  function refusal(res) {
    return res.json().then(function (b) { return b; }, function () { return {}; }).then(function (b) {
      var d = (b && b.error_description) || '';
      if (res.status === 401) {
        if (/used/.test(d)) { return 'used'; }
        if (/expired/.test(d)) { return 'expired'; }
        if (/revoked/.test(d)) { return 'revoked'; }
        return 'invalid';
      }
      if (res.status === 403) { return 'wrong'; }
      if (res.status === 404) { return 'notfound'; }
      if (res.status === 409) { return 'state'; }
      if (res.status === 400) { return 'invalid'; }
      if (res.status === 503) { return 'unavailable'; }
      return 'failed';
    });
  }

  var UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
  function redeem(method, suffix, body) {
    var init = { method: method, headers: { Authorization: 'Bearer ' + token }, cache: 'no-store',
      credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    return fetch('/v1/cards/' + encodeURIComponent(card) + suffix, init);
  }

  var section = document.getElementById('cg-' + widget);
  if (!token || !UUID.test(card) || !/^[A-Za-z0-9_.~-]{8,200}$/.test(token)) {
    fail('missing');
    return;
  }
  if (wasUsed()) { fail('used'); return; }

  function group(pan) { return pan.replace(/(\d{4})(?=\d)/g, '$1 '); }

  function reveal() {
    say(TEXT.loading);
    redeem('GET', '/details').then(function (res) {
      if (!res.ok) { return refusal(res).then(fail); }
      return res.json().then(function (d) {
        setUsed();
        document.getElementById('cg-pan').textContent = group(String(d.pan));
        var mm = ('0' + d.expiry_month).slice(-2);
        document.getElementById('cg-expiry').textContent = mm + '/' + String(d.expiry_year).slice(-2);
        document.getElementById('cg-cvv').textContent = String(d.cvv);
        document.getElementById('cg-name').textContent = String(d.cardholder_name || '');
        section.hidden = false;
        say('', 'shown');
        tell('success');
      });
    }, function () { fail('failed'); });
    document.querySelectorAll('.cg-copy').forEach(function (b) {
      b.addEventListener('click', function () {
        var v = document.getElementById(b.getAttribute('data-copy')).textContent.replace(/ /g, '');
        if (!navigator.clipboard) { say(TEXT.failed); return; }
        navigator.clipboard.writeText(v).then(function () { say(TEXT.copied); }, function () { say(TEXT.failed); });
      });
    });
  }

  function getPin() {
    section.hidden = false;
    var button = document.getElementById('cg-show-pin');
    var pin = document.getElementById('cg-pin');
    say('', 'ready');
    button.addEventListener('click', function () {
      button.disabled = true;
      redeem('GET', '/pin').then(function (res) {
        if (!res.ok) { return refusal(res).then(function (c) { section.hidden = true; fail(c); }); }
        return res.json().then(function (d) {
          setUsed();
          pin.textContent = String(d.pin);
          say(TEXT.pin_shown, 'shown');
          tell('success');
          window.setTimeout(function () {
            pin.textContent = '••••';
            button.hidden = true;
            say(TEXT.pin_hidden, 'used');
          }, hideAfter * 1000);
        });
      }, function () { button.disabled = false; fail('failed'); });
    });
  }

  function trivial(p) {
    if (/^(\d)\1+$/.test(p)) { return true; }
    var up = true, down = true;
    for (var i = 1; i < p.length; i++) {
      var d = p.charCodeAt(i) - p.charCodeAt(i - 1);
      if (d !== 1 && d !== -9) { up = false; }
      if (d !== -1 && d !== 9) { down = false; }
    }
    return up || down;
  }

  function setPin() {
    section.hidden = false;
    var form = document.getElementById('cg-pin-form');
    var a = document.getElementById('cg-new-pin');
    var b = document.getElementById('cg-confirm-pin');
    var err = document.getElementById('cg-pin-error');
    var button = document.getElementById('cg-set-pin-button');
    say('', 'ready');
    function invalid(text, field) {
      err.textContent = text;
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    }
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      err.textContent = '';
      a.removeAttribute('aria-invalid');
      b.removeAttribute('aria-invalid');
      var p = a.value;
      if (!/^[0-9]{4,12}$/.test(p)) { return invalid(TEXT.pin_digits, a); }
      if (trivial(p)) { return invalid(TEXT.pin_trivial, a); }
      if (b.value !== p) { return invalid(TEXT.pin_mismatch, b); }
      button.disabled = true;
      redeem('PUT', '/pin', { pin: p }).then(function (res) {
        a.value = ''; b.value = '';
        if (!res.ok) {
          return refusal(res).then(function (c) {
            if (c !== 'invalid') { section.hidden = true; } else { button.disabled = false; }
            fail(c);
          });
        }
        setUsed();
        section.hidden = true;
        say(TEXT.pin_set, 'done');
        tell('success');
      }, function () { button.disabled = false; fail('failed'); });
    });
  }

  function activate() {
    section.hidden = false;
    var button = document.getElementById('cg-activate-button');
    say('', 'ready');
    button.addEventListener('click', function () {
      button.disabled = true;
      redeem('POST', '/activate').then(function (res) {
        if (!res.ok) { return refusal(res).then(function (c) { section.hidden = true; fail(c); }); }
        setUsed();
        section.hidden = true;
        say(TEXT.activated, 'done');
        tell('success');
      }, function () { button.disabled = false; fail('failed'); });
    });
  }

  var run = { reveal: reveal, 'get-pin': getPin, 'set-pin': setPin, activate: activate }[widget];
  if (!run) { fail('invalid'); return; }
  run();
  tell('ready');
})();
