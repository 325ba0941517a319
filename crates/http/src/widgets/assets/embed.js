// cardgate embed.js: mounts a cardgate widget in an iframe. Plain script, no build step.
//
//   <script src="https://cardgate.example/widgets/v1/embed.js"></script>
//   CardgateWidgets.mount(document.getElementById('card'), {
//     type: 'reveal',              // 'reveal' | 'get-pin' | 'set-pin' | 'activate'
//     token: widgetToken,          // a card token for that operation (Synctera widget_token …)
//     card: cardId, tenant: tenantId,
//     theme: { background: '#fff', color: '#1a1a1a', accent: '#0b57d0', fontFamily: 'Georgia', fontSize: '18px' },
//     labels: { title: 'Your card', copy: 'Copy' },
//     hideAfter: 5,                // get-pin: seconds the PIN stays visible
//     onReady: fn, onSuccess: fn, onError: fn(code)
//   });
//
// The token goes in the iframe URL's fragment, never to a server log. The host hears only
// `ready`, `success` and `error` (with a code), never card data.
(function () {
  'use strict';
  var script = document.currentScript;
  var base = script ? new URL(script.src, window.location.href).origin : '';
  var TYPES = { reveal: 1, 'get-pin': 1, 'set-pin': 1, activate: 1, REVEAL: 'reveal', GET_PIN: 'get-pin', SET_PIN: 'set-pin', ACTIVATE: 'activate' };

  function mount(element, options) {
    var o = options || {};
    var type = TYPES[o.type] === 1 ? o.type : TYPES[o.type];
    if (!element || !type) { throw new Error('CardgateWidgets.mount(element, {type, token, card, tenant})'); }
    var server = o.baseUrl || base;
    var query = new URLSearchParams({ tenant: o.tenant || '', origin: window.location.origin });
    var fragment = new URLSearchParams({ token: o.token || '', card: o.card || '' });
    if (o.theme) { fragment.set('theme', JSON.stringify(o.theme)); }
    if (o.labels) { fragment.set('labels', JSON.stringify(o.labels)); }
    if (o.hideAfter) { fragment.set('hide_after', String(o.hideAfter)); }
    var frame = document.createElement('iframe');
    frame.src = server + '/widgets/v1/' + type + '?' + query.toString() + '#' + fragment.toString();
    frame.title = o.title || 'Card widget';
    frame.setAttribute('allow', 'clipboard-write');
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.setAttribute('sandbox', 'allow-scripts allow-same-origin allow-forms');
    frame.width = '100%';
    frame.height = String(o.height || 360);
    frame.setAttribute('frameborder', '0');
    function listen(ev) {
      if (ev.origin !== server || ev.source !== frame.contentWindow) { return; }
      var m = ev.data || {};
      if (m.source !== 'cardgate') { return; }
      if (m.type === 'ready' && o.onReady) { o.onReady(); }
      if (m.type === 'success' && o.onSuccess) { o.onSuccess(); }
      if (m.type === 'error' && o.onError) { o.onError(String(m.code || 'failed')); }
    }
    window.addEventListener('message', listen);
    element.appendChild(frame);
    return { iframe: frame, unmount: function () { window.removeEventListener('message', listen); frame.remove(); } };
  }

  window.CardgateWidgets = { mount: mount };
})();
