/**
 * The web page's HTML, style sheet and script (vanilla, no build step). The script builds every
 * piece of data into the DOM with textContent and attributes, never as markup: file names are
 * arbitrary bytes. Views (by location.hash): `#images`, `#tree?image=HEX&path=P`,
 * `#share?name=N&from=T&to=T`, `#plan?have=HEX|none&want=HEX`.
 */

/** The page at `/`. */
export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cfsdist</title>
<link rel="stylesheet" href="/ui/app.css">
<script src="/ui/chart.js" defer></script>
<script src="/ui/app.js" defer></script>
</head>
<body>
<header><a href="#images" id="home">cfsdist</a> <span class="muted">read-only view of this server's store</span></header>
<main id="main"><p class="muted">loading…</p></main>
</body>
</html>
`;

/** `/ui/app.css`. */
export const APP_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { background: #234; color: #fff; padding: 8px 16px; }
header a { color: #fff; font-weight: bold; text-decoration: none; }
main { padding: 12px 16px; }
.muted { color: #888; }
header .muted { color: #9ab; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
.crumbs a { margin: 0 2px; }
.pager button { margin-right: 6px; }
.error { color: #b00; }
#chart-box { max-width: 720px; }
.expired { color: #fff; background: #b00; padding: 0 4px; border-radius: 3px; }
.expiring { color: #000; background: #fc3; padding: 0 4px; border-radius: 3px; }
dl.config { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 8px 0; }
dl.config dt { font-weight: bold; }
dl.config dd { margin: 0; white-space: pre-wrap; }
`;

/** `/ui/app.js`. */
export const APP_JS = String.raw`'use strict';
(function () {
  var main = document.getElementById('main');
  var PAGE = 500;

  function el(tag, props) {
    var e = document.createElement(tag);
    if (props) for (var k in props) {
      if (k === 'text') e.textContent = props[k];
      else if (k === 'class') e.className = props[k];
      else if (k === 'on') for (var ev in props.on) e.addEventListener(ev, props.on[ev]);
      else e.setAttribute(k, props[k]);
    }
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  function bytes(n) {
    if (n === undefined || n === null) return '';
    var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    var i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? String(n) : n.toFixed(1)) + ' ' + u[i];
  }
  function short(hex) { return hex ? hex.slice(0, 12) + '…' : ''; }
  function hashFor(view, params) {
    var q = new URLSearchParams(params).toString();
    return '#' + view + (q ? '?' + q : '');
  }
  function link(text, view, params) { return el('a', { href: hashFor(view, params), text: text }); }
  function getJson(url) {
    return fetch(url, { headers: { Accept: 'application/json' } }).then(function (r) {
      return r.json().then(function (v) {
        if (!r.ok) throw new Error(v && v.error ? v.error : 'HTTP ' + r.status);
        return v;
      });
    });
  }
  function show(view, nodes) {
    main.replaceChildren.apply(main, nodes);
    document.body.setAttribute('data-view', view);
  }
  function fail(err) { show('error', [el('p', { class: 'error', text: String(err && err.message ? err.message : err) })]); }
  function cell(text, cls) { return el('td', cls ? { class: cls, text: text } : { text: text }); }
  function thead(cols) {
    var tr = el('tr');
    cols.forEach(function (c) { tr.appendChild(el('th', c.charAt(0) === '#' ? { class: 'num', text: c.slice(1) } : { text: c })); });
    return el('thead', null, tr);
  }

  // ---- images
  function viewImages() {
    return getJson('/ui/api/images').then(function (v) {
      var tb = el('tbody');
      v.images.forEach(function (im) {
        var st = im.statement;
        var expiry = !st || !st.expires ? '' : st.expired ? 'expired' : st.expiresSoon ? 'soon' : 'ok';
        var expCell = el('td', null);
        if (st && st.expires) {
          expCell.appendChild(document.createTextNode(st.expires + ' '));
          if (expiry === 'expired') expCell.appendChild(el('span', { class: 'expired', text: 'expired' }));
          if (expiry === 'soon') expCell.appendChild(el('span', { class: 'expiring', text: 'expires within 7 days' }));
        }
        tb.appendChild(el('tr', { 'data-ref': im.name + ':' + im.tag, 'data-expiry': expiry },
          el('td', null, link(im.name + ':' + im.tag, 'tree', { image: im.image, path: '/' })),
          el('td', { class: 'mono', title: im.image, text: short(im.image) }),
          cell(st && st.version !== undefined ? String(st.version) : (st ? 'unreadable' : 'unsigned')),
          el('td', { class: 'mono', text: st && st.keyids ? st.keyids.join(', ') : '' }),
          expCell,
          cell(bytes(im.imageSize), 'num'),
          cell(im.entries, 'num'),
          cell(im.objects, 'num'),
          cell(bytes(im.objectBytes), 'num'),
          cell(im.history.join(' ')),
          el('td', null, link('sharing', 'share', { name: im.name }), ' ', link('pull plan', 'plan', { have: 'none', want: im.image }))));
      });
      show('images', [el('h2', { text: 'Images' }), el('p', null, link('Pull plan: I have X, I want Y', 'plan', {})),
        el('table', { id: 'images' }, thead(['NAME:TAG', 'image', 'version', 'keyid', 'expires', '#image size', '#entries', '#objects', '#object bytes', 'history', '']), tb)]);
    });
  }

  // ---- tree
  function joinPath(dir, name) { return dir === '/' ? '/' + name : dir + '/' + name; }
  function hexOf(text) {
    return Array.prototype.map.call(new TextEncoder().encode(text), function (b) { return (b < 16 ? '0' : '') + b.toString(16); }).join('');
  }
  // Where an entry lives: by UTF-8 path, or by exact bytes (hexpath) once a name is not UTF-8.
  function childParams(image, v, byHex, e) {
    if (!byHex && e.nameHex === undefined) return { image: image, path: joinPath(v.path, e.name) };
    var dir = v.pathHex === '2f' || v.pathHex === '' ? '' : v.pathHex;
    return { image: image, hexpath: dir + '2f' + (e.nameHex !== undefined ? e.nameHex : hexOf(e.name)) };
  }
  function viewTree(p) {
    var image = p.get('image') || '';
    var byHex = p.has('hexpath');
    var path = p.get('path') || '/';
    var where = byHex ? { hexpath: p.get('hexpath') || '' } : { path: path };
    var offset = Number(p.get('offset') || 0);
    var q = p.get('q') || '';
    var t0 = performance.now();
    var api = '/ui/api/tree?' + new URLSearchParams(Object.assign({ image: image, offset: String(offset), limit: String(PAGE), q: q }, where)).toString();
    return getJson(api).then(function (v) {
      path = v.path;
      function here(extra) { return Object.assign({ image: image }, where, extra); }
      var crumbs = el('div', { class: 'crumbs' }, link('/', 'tree', { image: image, path: '/' }));
      var acc = '';
      if (byHex) {
        // Components by bytes: split the hex path at 2f bytes (pairs, not substrings).
        var pairs = v.pathHex.match(/../g) || [];
        var comps = [];
        var cur = '';
        pairs.forEach(function (b) { if (b === '2f') { if (cur) comps.push(cur); cur = ''; } else cur += b; });
        if (cur) comps.push(cur);
        var labels = path.split('/').filter(Boolean);
        var accHex = '';
        comps.forEach(function (c, i) {
          accHex += '2f' + c;
          crumbs.appendChild(link(labels[i] !== undefined ? labels[i] : '?', 'tree', { image: image, hexpath: accHex }));
          crumbs.appendChild(document.createTextNode('/'));
        });
      } else {
        path.split('/').filter(Boolean).forEach(function (c) {
          acc += '/' + c;
          crumbs.appendChild(link(c, 'tree', { image: image, path: acc }));
          crumbs.appendChild(document.createTextNode('/'));
        });
      }
      var search = el('input', { type: 'search', id: 'search', placeholder: 'search this directory', value: q });
      search.addEventListener('keydown', function (e) {
        if (e.key === 'Enter') location.hash = hashFor('tree', here({ q: search.value }));
      });
      var frag = document.createDocumentFragment();
      v.entries.forEach(function (e) {
        var child = childParams(image, v, byHex, e);
        var nameCell = el('td', { class: 'name' });
        if (e.type === 'dir') nameCell.appendChild(link(e.name + '/', 'tree', child));
        else if (e.type === 'file') nameCell.appendChild(el('a', { href: '/ui/api/file?' + new URLSearchParams(child).toString(), download: '', text: e.name }));
        else nameCell.appendChild(document.createTextNode(e.name));
        if (e.target !== undefined) nameCell.appendChild(el('span', { class: 'muted', text: ' → ' + e.target }));
        var xa = e.xattrs ? e.xattrs.map(function (x) { return x.key + '=' + (x.value !== undefined ? x.value : '0x' + x.valueHex); }).join('\n') : '';
        frag.appendChild(el('tr', { 'data-name': e.name },
          nameCell, cell(e.type), el('td', { class: 'mono', text: e.mode }), cell(e.uid + ':' + e.gid, 'num'), cell(e.type === 'dir' ? '' : bytes(e.size), 'num'),
          cell(e.storage || ''), el('td', { class: 'mono', title: e.object || '', text: e.object ? short(e.object) : '' }),
          el('td', { class: 'mono', title: xa, text: e.xattrs ? e.xattrs.length + ' xattr' : '' })));
      });
      var tbody = el('tbody');
      tbody.appendChild(frag);
      var pager = el('div', { class: 'pager' });
      var last = Math.min(v.total, offset + v.entries.length);
      if (offset > 0) pager.appendChild(el('button', { id: 'prev', text: '← previous', on: { click: function () { location.hash = hashFor('tree', here({ q: q, offset: String(Math.max(0, offset - PAGE)) })); } } }));
      if (last < v.total) pager.appendChild(el('button', { id: 'next', text: 'next →', on: { click: function () { location.hash = hashFor('tree', here({ q: q, offset: String(offset + PAGE) })); } } }));
      pager.appendChild(el('span', { id: 'range', text: (v.total === 0 ? 0 : offset + 1) + '–' + last + ' of ' + v.total + ' entries' }));
      var table = el('table', { id: 'tree', 'data-path': path, 'data-total': String(v.total) },
        thead(['name', 'type', 'mode', '#uid:gid', '#size', 'content', 'object', 'xattrs']), tbody);
      var configBox = el('div', { id: 'config' });
      show('tree', [el('h2', { class: 'mono', title: image, text: 'image ' + short(image) }), configBox, crumbs, el('p', null, search), pager, table]);
      if (v.pathHex === '2f' && offset === 0 && !q) showConfig(image, configBox);
      window.__lastRenderMs = performance.now() - t0;
    });
  }

  // ---- sharing
  var chart = null;
  function viewShare(p) {
    var name = p.get('name') || '';
    var from = p.get('from') || '';
    var to = p.get('to') || '';
    var params = { name: name };
    if (from && to) { params.from = from; params.to = to; }
    return getJson('/ui/api/share?' + new URLSearchParams(params).toString()).then(function (v) {
      var label = {};
      v.images.forEach(function (im) { label[im.image] = im.tags.join(', '); });
      var imgs = el('tbody');
      v.images.forEach(function (im) {
        imgs.appendChild(el('tr', null, cell(im.tags.join(', ')), el('td', { class: 'mono', title: im.image, text: short(im.image) }), cell(im.objects, 'num'), cell(bytes(im.objectBytes), 'num')));
      });
      var pairs = el('tbody');
      v.pairs.forEach(function (pr) {
        pairs.appendChild(el('tr', { 'data-pair': label[pr.a] + '|' + label[pr.b] }, cell(label[pr.a]), cell(label[pr.b]), cell(pr.sharedObjects, 'num'), cell(bytes(pr.sharedBytes), 'num')));
      });
      var tags = [];
      v.images.forEach(function (im) { im.tags.forEach(function (t) { tags.push(t); }); });
      function select(id, cur) {
        var s = el('select', { id: id });
        tags.forEach(function (t) { var o = el('option', { value: t, text: t }); if (t === cur) o.selected = true; s.appendChild(o); });
        return s;
      }
      var sf = select('from', from || tags[0]);
      var stt = select('to', to || tags[1] || tags[0]);
      var go = el('button', { id: 'compare', text: 'compare', on: { click: function () { location.hash = hashFor('share', { name: name, from: sf.value, to: stt.value }); } } });
      var nodes = [el('h2', { text: 'Sharing: ' + name }),
        el('table', { id: 'share-images' }, thead(['tags', 'image', '#objects', '#object bytes']), imgs),
        el('h3', { text: 'Objects shared by each pair' }),
        el('table', { id: 'pairs' }, thead(['image', 'image', '#shared objects', '#shared bytes']), pairs),
        el('h3', { text: 'What an update moves' }), el('p', null, 'from ', sf, ' to ', stt, ' ', go)];
      if (v.update) {
        var u = v.update;
        nodes.push(el('table', { id: 'update', 'data-added': String(u.added), 'data-removed': String(u.removed) },
          thead(['', '#objects', '#bytes']),
          el('tbody', null,
            el('tr', null, cell('added (fetched)'), cell(u.added, 'num'), cell(bytes(u.addedBytes), 'num')),
            el('tr', null, cell('removed'), cell(u.removed, 'num'), cell(bytes(u.removedBytes), 'num')),
            el('tr', null, cell('kept'), cell(u.kept, 'num'), cell(bytes(u.keptBytes), 'num')))));
        nodes.push(metadataTable(u.delta, u.imageBytes));
      }
      var canvas = null;
      if (window.Chart && v.images.length > 0) {
        canvas = el('canvas', { id: 'chart' });
        nodes.push(el('h3', { text: 'Bytes shared by each pair' }), el('div', { id: 'chart-box' }, canvas));
      }
      show('share', nodes);
      if (canvas) {
        if (chart) chart.destroy();
        chart = new window.Chart(canvas, {
          type: 'bar',
          data: {
            labels: v.pairs.map(function (pr) { return label[pr.a] + ' ↔ ' + label[pr.b]; }),
            datasets: [{ label: 'shared MiB', data: v.pairs.map(function (pr) { return pr.sharedBytes / 1048576; }) }],
          },
          options: { animation: false, responsive: true },
        });
      }
    });
  }

  // The metadata a pull fetches: a delta from the server, or the full image.
  function metadataTable(d, imageBytes) {
    var tb = el('tbody', null, el('tr', null, cell('full image'), cell(bytes(imageBytes), 'num'), cell('')));
    if (d) {
      tb.appendChild(el('tr', { 'data-kind': d.kind }, cell('delta (' + (d.kind === 'zpatch' ? 'binary zpatch' : 'tree') + ', what a pull takes)'), cell(bytes(d.bytes), 'num'),
        cell(imageBytes > 0 ? (100 * d.bytes / imageBytes).toFixed(1) + '% of the image' : '', 'num')));
      if (d.kind === 'zpatch' && d.treeBytes !== undefined) tb.appendChild(el('tr', null, cell('tree delta'), cell(bytes(d.treeBytes), 'num'), cell('')));
    } else tb.appendChild(el('tr', null, cell(imageBytes > 0 ? 'no delta on the server: the full image is fetched' : 'the image is already there'), cell(''), cell('')));
    return el('table', { id: 'metadata', 'data-delta': d ? d.kind + ':' + d.bytes : 'none', 'data-image-bytes': String(imageBytes) }, thead(['metadata', '#bytes', '#']), tb);
  }

  // ---- pull plan
  function viewPlan(p) {
    var have = p.get('have') || 'none';
    var want = p.get('want') || '';
    return getJson('/ui/api/images').then(function (list) {
      var seen = {};
      var imgs = [];
      list.images.forEach(function (im) {
        if (seen[im.image]) { seen[im.image].label += ', ' + im.name + ':' + im.tag; return; }
        seen[im.image] = { image: im.image, label: im.name + ':' + im.tag };
        imgs.push(seen[im.image]);
      });
      function select(id, cur, withNone) {
        var s = el('select', { id: id });
        if (withNone) s.appendChild(el('option', { value: 'none', text: 'nothing' }));
        imgs.forEach(function (im) {
          var o = el('option', { value: im.image, text: im.label + ' (' + short(im.image) + ')' });
          if (im.image === cur) o.selected = true;
          s.appendChild(o);
        });
        return s;
      }
      var sh = select('have', have, true);
      var sw = select('want', want, false);
      var go = el('button', { id: 'plan-go', text: 'plan', on: { click: function () { location.hash = hashFor('plan', { have: sh.value, want: sw.value }); } } });
      var nodes = [el('h2', { text: 'Pull plan' }), el('p', null, 'I have ', sh, ', I want ', sw, ' ', go)];
      if (!want) { show('plan', nodes); return; }
      return getJson('/ui/api/plan?' + new URLSearchParams({ have: have, want: want }).toString()).then(function (v) {
        nodes.push(el('table', { id: 'plan', 'data-fetch': v.fetch.count + ':' + v.fetch.bytes, 'data-present': v.present.count + ':' + v.present.bytes },
          thead(['objects', '#count', '#bytes']),
          el('tbody', null,
            el('tr', null, cell('needed by the wanted image'), cell(v.needed.count, 'num'), cell(bytes(v.needed.bytes), 'num')),
            el('tr', null, cell('to fetch'), cell(v.fetch.count, 'num'), cell(bytes(v.fetch.bytes), 'num')),
            el('tr', null, cell('shared (already there)'), cell(v.present.count, 'num'), cell(bytes(v.present.bytes), 'num')))));
        nodes.push(metadataTable(v.delta, v.imageBytes));
        nodes.push(el('p', { id: 'plan-total', text: 'In all about ' + bytes(v.transferBytes) + ' to transfer (objects and metadata, before compression).' }));
        show('plan', nodes);
      });
    });
  }

  // The OCI config of the tags that point at an image, filled into BOX when there is one.
  function showConfig(image, box) {
    getJson('/ui/api/config?' + new URLSearchParams({ image: image }).toString()).then(function (v) {
      v.configs.forEach(function (c) {
        box.appendChild(el('h3', { text: 'Config of ' + c.name + ':' + c.tag }));
        box.appendChild(el('div', { class: 'mono muted', text: c.digest }));
        if (c.error) { box.appendChild(el('p', { class: 'error', text: c.error })); return; }
        var dl = el('dl', { class: 'config' });
        function row(k, text) { if (text !== undefined && text !== '') { dl.appendChild(el('dt', { text: k })); dl.appendChild(el('dd', { class: 'mono', 'data-key': k, text: text })); } }
        function argv(a) { return a ? JSON.stringify(a) : undefined; }
        row('Entrypoint', argv(c.entrypoint));
        row('Cmd', argv(c.cmd));
        row('User', c.user);
        row('WorkingDir', c.workingDir);
        row('Env', c.env ? c.env.join('\n') : undefined);
        row('Labels', c.labels ? Object.keys(c.labels).map(function (k) { return k + '=' + c.labels[k]; }).join('\n') : undefined);
        row('Platform', c.os ? c.os + (c.architecture ? '/' + c.architecture : '') : undefined);
        row('Created', c.created);
        box.appendChild(dl);
      });
    }).catch(function (err) { box.appendChild(el('p', { class: 'error', text: 'config: ' + (err && err.message ? err.message : err) })); });
  }

  function route() {
    var h = location.hash.replace(/^#/, '');
    var i = h.indexOf('?');
    var view = i < 0 ? h : h.slice(0, i);
    var p = new URLSearchParams(i < 0 ? '' : h.slice(i + 1));
    var r = view === 'tree' ? viewTree(p) : view === 'share' ? viewShare(p) : view === 'plan' ? viewPlan(p) : viewImages();
    r.catch(fail);
  }
  window.addEventListener('hashchange', route);
  route();
})();
`;
