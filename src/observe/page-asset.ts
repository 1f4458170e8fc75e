// The node page's HTML, style and script (served by src/observe/page.ts). All inline, nothing
// fetched from anywhere else: the page works offline and on an air-gapped node. Plain JS, no
// framework; every text from the agent goes in with textContent, never as markup. Kept free of
// backticks and dollar-braces so it can live in this template string as it is.
//
// What it draws: a circle of peers — this node's pods grouped by namespace (an arc per namespace),
// the Services flows were translated from, other nodes, "world" and other addresses — with one
// arrow per (source, destination, verdict, reason, policy): grey forwarded, amber audit, red
// dropped with the reason and the deciding policy as its label; every arrow's <title> has the
// details on hover. Beside it the recent drops, pods, services, policies and the event accounting.
// The DOM carries data-* attributes (peer, from, to, verdict, reason, policy) that the browser
// test reads.
export const NODE_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kelp node</title>
<style>
  :root { --fwd: #6b7a8f; --drop: #d62728; --audit: #e69500; --pod: #2b6cb0; --svc: #6b46c1; --node: #2f855a; --world: #4a5568; --bg: #fafafa; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 13px/1.4 system-ui, sans-serif; color: #1a202c; background: var(--bg); }
  header { display: flex; gap: 16px; align-items: baseline; padding: 8px 16px; background: #1a202c; color: #fff; }
  header h1 { font-size: 16px; margin: 0; }
  #conn { padding: 1px 8px; border-radius: 8px; background: #718096; }
  #conn.live { background: #2f855a; }
  #conn.down { background: var(--drop); }
  #totals { margin-left: auto; opacity: .85; }
  main { display: grid; grid-template-columns: minmax(560px, 3fr) minmax(320px, 2fr); gap: 12px; padding: 12px; }
  section { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 10px; margin-bottom: 12px; overflow: auto; }
  h2 { font-size: 13px; margin: 0 0 6px; text-transform: uppercase; letter-spacing: .04em; color: #4a5568; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 2px 6px; border-bottom: 1px solid #edf2f7; white-space: nowrap; }
  th { color: #718096; font-weight: 600; }
  td.reason { color: var(--drop); font-weight: 600; }
  #drops td:last-child { white-space: normal; }
  .empty { color: #a0aec0; font-style: italic; }
  svg { width: 100%; height: auto; display: block; }
  .peer circle { stroke: #fff; stroke-width: 2; }
  .peer.pod circle { fill: var(--pod); }
  .peer.service circle { fill: var(--svc); }
  .peer.node circle { fill: var(--node); }
  .peer.world circle, .peer.address circle { fill: var(--world); }
  .peer text { font-size: 11px; fill: #2d3748; }
  .group-arc { fill: none; stroke: #cbd5e0; stroke-width: 6; stroke-linecap: round; }
  .group-label { font-size: 12px; font-weight: 700; fill: #4a5568; }
  .edge path { fill: none; stroke-opacity: .85; }
  .edge.forwarded path { stroke: var(--fwd); }
  .edge.audit path { stroke: var(--audit); stroke-dasharray: 6 3; }
  .edge.dropped path { stroke: var(--drop); stroke-dasharray: 4 3; }
  .edge text { font-size: 11px; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
  .edge.dropped text { fill: var(--drop); font-weight: 600; }
  .edge.audit text { fill: var(--audit); }
  .edge:hover path { stroke-width: 4 !important; stroke-opacity: 1; }
  .legend span { margin-right: 12px; }
  .legend i { display: inline-block; width: 18px; height: 3px; vertical-align: middle; margin-right: 4px; }
  .stats td:not(:first-child) { text-align: right; }
</style>
</head>
<body data-state="loading">
<header>
  <h1>kelp · <span id="node">node</span></h1>
  <span id="conn">connecting</span>
  <span id="totals"></span>
</header>
<main>
  <div>
    <section>
      <h2>Who talks to whom</h2>
      <div class="legend"><span><i style="background:var(--fwd)"></i>forwarded</span><span><i style="background:var(--drop)"></i>dropped (reason · policy)</span><span><i style="background:var(--audit)"></i>audit</span><span>hover an arrow for details</span></div>
      <svg id="graph" viewBox="0 0 960 700" role="img" aria-label="flows between this node's pods, services and peers"></svg>
    </section>
    <section>
      <h2>Recent drops</h2>
      <table id="drops"><thead><tr><th>time</th><th>from</th><th>to</th><th>proto</th><th>reason</th><th>policy</th></tr></thead><tbody></tbody></table>
    </section>
  </div>
  <div>
    <section><h2>Pods on this node</h2><table id="pods"><thead><tr><th>namespace</th><th>pod</th><th>address</th><th>state</th></tr></thead><tbody></tbody></table></section>
    <section><h2>Services</h2><table id="services"><thead><tr><th>service</th><th>frontend</th><th>backends</th></tr></thead><tbody></tbody></table></section>
    <section><h2>Policies</h2><table id="policies"><thead><tr><th>policy</th><th>tier</th><th>local pods</th></tr></thead><tbody></tbody></table></section>
    <section><h2>Events</h2><table id="stats" class="stats"><thead><tr><th>class</th><th>emitted</th><th>suppressed</th><th>lost</th><th>received</th></tr></thead><tbody></tbody></table></section>
  </div>
</main>
<script>
(function () {
  'use strict';
  var SVGNS = 'http://www.w3.org/2000/svg';
  var MAX_DROPS = 50;
  var snapshot = { node: '', pods: [], services: [], policies: [] };
  var edges = new Map();
  var extraPeers = new Map();
  var drops = [];
  var seen = { flows: 0, drops: 0, missed: 0 };
  var renderQueued = false;

  function el(tag, attrs, text) {
    var e = tag.indexOf('svg:') === 0 ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function rows(id, list, cells, empty) {
    var body = document.querySelector('#' + id + ' tbody');
    body.replaceChildren();
    if (!list.length) {
      var tr = el('tr');
      tr.appendChild(el('td', { colspan: 8, class: 'empty' }, empty));
      body.appendChild(tr);
      return;
    }
    list.forEach(function (x) {
      var tr = el('tr');
      cells(x, tr).forEach(function (c) { tr.appendChild(typeof c === 'string' ? el('td', null, c) : c); });
      body.appendChild(tr);
    });
  }

  function podName(p) { return (p.namespace ? p.namespace + '/' : '') + p.name; }
  function policyText(p) {
    if (!p) return '';
    var s = p.kind + ' ' + (p.namespace ? p.namespace + '/' : '') + p.name;
    return s;
  }
  function ruleText(p) {
    if (!p) return '';
    return p.rule === 65535 ? 'no rule allows it (isolated)' : 'rule ' + p.rule;
  }

  // This node's pods by address: a record whose side the agent could not name is still drawn as
  // the pod the snapshot says holds that address.
  var podByIp = new Map();

  // A flow's side as a peer of the picture.
  function peerOf(side) {
    var known = side.pod ? null : podByIp.get(side.address);
    if (known) side = { address: side.address, port: side.port, pod: known };
    if (side.pod) return { key: 'pod:' + side.pod.namespace + '/' + side.pod.name, kind: 'pod', group: side.pod.namespace, label: side.pod.name };
    if (side.node) {
      var self = side.node === snapshot.node;
      return { key: 'node:' + side.node, kind: 'node', group: 'nodes', label: self ? side.node + ' (this node)' : side.node };
    }
    if (side.world) return { key: 'world', kind: 'world', group: 'world', label: 'world' };
    return { key: 'addr:' + side.address, kind: 'address', group: 'other', label: side.address };
  }
  function servicePeer(svc) {
    return { key: 'svc:' + svc.namespace + '/' + svc.name, kind: 'service', group: 'services', label: svc.namespace + '/' + svc.name };
  }

  function addEdge(from, to, rec) {
    var reason = rec.verdict === 'forwarded' ? '' : rec.reason || '';
    var policy = rec.verdict === 'forwarded' ? '' : policyText(rec.policy);
    var key = [from.key, to.key, rec.verdict, reason, policy].join('|');
    var e = edges.get(key);
    if (!e) {
      e = { from: from.key, to: to.key, verdict: rec.verdict, reason: reason, policy: policy, rule: ruleText(rec.policy), count: 0, bytes: 0, ports: new Set(), protocols: new Set(), last: '' };
      edges.set(key, e);
    }
    e.count++;
    if (rec.counters) e.bytes += rec.counters.bytesOut + rec.counters.bytesIn;
    if (rec.destination.port) e.ports.add(rec.destination.port);
    e.protocols.add(rec.protocol);
    e.last = rec.time;
    [from, to].forEach(function (p) { if (!extraPeers.has(p.key)) extraPeers.set(p.key, p); });
  }

  function onFlow(rec) {
    seen.flows++;
    if (rec.type === 'trace') return;
    var src = peerOf(rec.source);
    var dst = peerOf(rec.destination);
    // A flow-end repeats its start's edge: it adds bytes, not a flow.
    if (rec.type === 'flow-end') {
      edges.forEach(function (e) { if (e.from === src.key && e.to === dst.key && e.verdict === rec.verdict && rec.counters) e.bytes += rec.counters.bytesOut + rec.counters.bytesIn; });
    } else if (rec.service) {
      var svc = servicePeer(rec.service);
      addEdge(src, svc, rec);
      addEdge(svc, dst, rec);
    } else {
      addEdge(src, dst, rec);
    }
    if (rec.verdict === 'dropped') {
      seen.drops++;
      drops.unshift(rec);
      if (drops.length > MAX_DROPS) drops.length = MAX_DROPS;
    }
    queueRender();
    refreshSoon();
  }

  // Flows arriving: the event accounting (and new pods) follow within a second, not at the next 5 s tick.
  var lastLoad = 0;
  function refreshSoon() {
    if (Date.now() - lastLoad < 1000) return;
    lastLoad = Date.now();
    setTimeout(function () { loadNode().catch(function () {}); }, 500);
  }

  function queueRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(function () { renderQueued = false; render(); }, 100);
  }

  // Every peer to draw: the snapshot's pods and services, then whatever flows named.
  function peers() {
    var all = new Map();
    snapshot.pods.forEach(function (p) {
      if (!p.ip) return;
      var key = 'pod:' + podName(p);
      all.set(key, { key: key, kind: 'pod', group: p.namespace || '(no namespace)', label: p.name, detail: p.ip + ' · ' + p.state });
    });
    extraPeers.forEach(function (p, k) { if (!all.has(k)) all.set(k, p); });
    return Array.from(all.values());
  }
  var GROUP_ORDER = { services: 1, nodes: 2, world: 3, other: 4 };
  function groupRank(g) { return GROUP_ORDER[g] || 0; }

  function render() {
    var svg = document.getElementById('graph');
    svg.replaceChildren();
    var defs = el('svg:defs');
    [['forwarded', 'var(--fwd)'], ['dropped', 'var(--drop)'], ['audit', 'var(--audit)']].forEach(function (m) {
      var mk = el('svg:marker', { id: 'arrow-' + m[0], viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
      mk.appendChild(el('svg:path', { d: 'M0,0 L10,5 L0,10 z', style: 'fill:' + m[1] }));
      defs.appendChild(mk);
    });
    svg.appendChild(defs);

    var list = peers();
    list.sort(function (a, b) { return groupRank(a.group) - groupRank(b.group) || (a.group < b.group ? -1 : a.group > b.group ? 1 : 0) || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0); });
    var groups = [];
    list.forEach(function (p) { if (!groups.length || groups[groups.length - 1].name !== p.group) groups.push({ name: p.group, peers: [] }); groups[groups.length - 1].peers.push(p); });
    if (!list.length) {
      svg.appendChild(el('svg:text', { x: 480, y: 350, 'text-anchor': 'middle', class: 'empty' }, 'no pods and no flows yet'));
      return;
    }
    var cx = 480, cy = 350, R = 215;
    // Slots around the circle: one per peer, and one empty slot between groups.
    var slots = list.length + groups.length;
    var step = 2 * Math.PI / Math.max(slots, 3);
    var pos = new Map();
    var i = 0;
    var gLayer = el('svg:g', { class: 'groups' });
    groups.forEach(function (g) {
      var start = i * step;
      g.peers.forEach(function (p) {
        var a = i * step - Math.PI / 2;
        pos.set(p.key, { x: cx + R * Math.cos(a), y: cy + R * Math.sin(a), a: a });
        i++;
      });
      var end = (i - 1) * step;
      var mid = (start + end) / 2 - Math.PI / 2;
      // Outside the peers' own labels (up to ~90 px out along the radius).
      var r2 = R + 105;
      if (end > start) {
        var a0 = start - Math.PI / 2 - step / 3, a1 = end - Math.PI / 2 + step / 3, ra = R + 26;
        gLayer.appendChild(el('svg:path', { class: 'group-arc', d: 'M' + (cx + ra * Math.cos(a0)) + ',' + (cy + ra * Math.sin(a0)) + ' A' + ra + ',' + ra + ' 0 ' + (a1 - a0 > Math.PI ? 1 : 0) + ' 1 ' + (cx + ra * Math.cos(a1)) + ',' + (cy + ra * Math.sin(a1)) }));
      }
      var label = g.name === 'services' ? 'Services' : g.name === 'nodes' ? 'nodes' : g.name === 'world' || g.name === 'other' ? '' : 'namespace ' + g.name;
      if (label) gLayer.appendChild(el('svg:text', { class: 'group-label', 'data-group': g.name, x: cx + r2 * Math.cos(mid), y: cy + r2 * Math.sin(mid), 'text-anchor': Math.cos(mid) > 0.3 ? 'start' : Math.cos(mid) < -0.3 ? 'end' : 'middle' }, label));
      i++;
    });
    svg.appendChild(gLayer);

    // Arrows between the same two peers bend apart.
    var pairCount = new Map();
    var eLayer = el('svg:g', { class: 'edges' });
    edges.forEach(function (e) {
      var p1 = pos.get(e.from), p2 = pos.get(e.to);
      if (!p1 || !p2) return;
      var pk = [e.from, e.to].sort().join('|');
      var nth = pairCount.get(pk) || 0;
      pairCount.set(pk, nth + 1);
      var mx = (p1.x + p2.x) / 2, my = (p1.y + p2.y) / 2;
      var pull = 0.45 - 0.2 * nth;
      var qx = mx + (cx - mx) * pull, qy = my + (cy - my) * pull;
      if (e.from === e.to) { qx = p1.x + (cx - p1.x) * 0.4 + 30; qy = p1.y + (cy - p1.y) * 0.4; }
      // Stop short of the target's circle so the arrowhead shows.
      var dx = p2.x - qx, dy = p2.y - qy, d = Math.sqrt(dx * dx + dy * dy) || 1;
      var ex = p2.x - dx / d * 16, ey = p2.y - dy / d * 16;
      var g = el('svg:g', { class: 'edge ' + e.verdict, 'data-from': e.from, 'data-to': e.to, 'data-verdict': e.verdict, 'data-reason': e.reason || null, 'data-policy': e.policy || null, 'data-count': e.count });
      var w = Math.min(1.5 + Math.log2(e.count + 1), 7);
      g.appendChild(el('svg:path', { d: 'M' + p1.x + ',' + p1.y + ' Q' + qx + ',' + qy + ' ' + ex + ',' + ey, 'stroke-width': w, 'marker-end': 'url(#arrow-' + e.verdict + ')' }));
      var title = e.from + ' → ' + e.to + '\\n' + e.verdict + (e.reason ? ' ' + e.reason : '') + (e.policy ? '\\nby ' + e.policy + ' (' + e.rule + ')' : '') +
        '\\n' + Array.from(e.protocols).join('/') + (e.ports.size ? ' port ' + Array.from(e.ports).slice(0, 8).join(', ') : '') +
        '\\n' + e.count + (e.count === 1 ? ' record' : ' records') + (e.bytes ? ', ' + e.bytes + ' bytes' : '') + '\\nlast ' + e.last;
      g.appendChild(el('svg:title', null, title));
      // Drops and audits say why on the arrow itself; forwarded arrows only on hover.
      if (e.verdict !== 'forwarded') {
        var tx = 0.25 * p1.x + 0.5 * qx + 0.25 * ex, ty = 0.25 * p1.y + 0.5 * qy + 0.25 * ey;
        g.appendChild(el('svg:text', { class: 'edge-label', x: tx, y: ty - 4, 'text-anchor': 'middle' }, (e.verdict === 'dropped' ? '✕ ' : 'audit ') + e.reason + (e.policy ? ' · ' + e.policy : '') + (e.count > 1 ? ' ×' + e.count : '')));
      }
      eLayer.appendChild(g);
    });
    svg.appendChild(eLayer);

    var pLayer = el('svg:g', { class: 'peers' });
    list.forEach(function (p) {
      var at = pos.get(p.key);
      var g = el('svg:g', { class: 'peer ' + p.kind, 'data-peer': p.key, transform: 'translate(' + at.x + ',' + at.y + ')' });
      g.appendChild(el('svg:circle', { r: 12 }));
      var out = 20, c = Math.cos(at.a), s = Math.sin(at.a);
      g.appendChild(el('svg:text', { x: c * out, y: s * out + 4, 'text-anchor': c > 0.3 ? 'start' : c < -0.3 ? 'end' : 'middle' }, p.label));
      g.appendChild(el('svg:title', null, p.key + (p.detail ? '\\n' + p.detail : '')));
      pLayer.appendChild(g);
    });
    svg.appendChild(pLayer);

    rows('drops', drops, function (r) {
      return [
        r.time.replace('T', ' ').slice(0, 23),
        peerOf(r.source).label + (r.source.port ? ':' + r.source.port : ''),
        peerOf(r.destination).label + (r.destination.port ? ':' + r.destination.port : ''),
        r.protocol,
        el('td', { class: 'reason' }, r.reason || ''),
        r.policy ? policyText(r.policy) + ' (' + ruleText(r.policy) + ')' : '',
      ];
    }, 'no drops seen since the page opened');
    document.querySelectorAll('#drops tbody tr').forEach(function (tr, k) {
      var r = drops[k];
      if (!r) return;
      tr.className = 'drop';
      tr.dataset.from = peerOf(r.source).key;
      tr.dataset.to = peerOf(r.destination).key;
      tr.dataset.reason = r.reason || '';
    });
    document.getElementById('totals').textContent = seen.flows + ' records, ' + seen.drops + ' drops since the page opened' + (seen.missed ? ', ' + seen.missed + ' missed (page too slow)' : '');
  }

  function renderSnapshot() {
    podByIp = new Map();
    snapshot.pods.forEach(function (p) {
      if (p.namespace && p.ip) p.ip.split(',').forEach(function (ip) { podByIp.set(ip, { namespace: p.namespace, name: p.name }); });
    });
    document.getElementById('node').textContent = snapshot.node;
    document.title = 'kelp · ' + snapshot.node;
    rows('pods', snapshot.pods, function (p) { return [p.namespace || '—', p.name, p.ip || '—', p.state]; }, 'no pods');
    rows('services', snapshot.services, function (s) {
      return [s.service, s.kind + ' ' + s.address + ':' + s.port + '/' + s.protocol, s.backends.length ? s.backends.map(function (b) { return b.address + ':' + b.port; }).join(', ') : 'none'];
    }, 'no services');
    rows('policies', snapshot.policies, function (p) { return [p.kind + ' ' + p.name + (p.audit ? ' (audit)' : ''), p.tier, String(p.localPods)]; }, 'no policies');
    var st = snapshot.stats;
    rows('stats', st ? ['drop', 'flow', 'trace'] : [], function (c) {
      var x = st.byClass[c];
      return [c, String(x.emitted), String(x.suppressed), String(x.lost), String(x.received)];
    }, 'not reading events yet');
    render();
  }

  function loadNode() {
    return fetch('api/node', { cache: 'no-store' }).then(function (r) {
      if (!r.ok) throw new Error('api/node: ' + r.status);
      return r.json();
    }).then(function (s) { snapshot = s; renderSnapshot(); });
  }

  function connect() {
    var conn = document.getElementById('conn');
    var es = new EventSource('api/flows');
    var opened = false;
    es.addEventListener('open', function () {
      // A reconnect replays the backlog: start from a clean picture so nothing counts twice.
      if (opened) { edges.clear(); extraPeers.clear(); drops = []; seen = { flows: 0, drops: 0, missed: 0 }; queueRender(); }
      opened = true;
      conn.textContent = 'live'; conn.className = 'live'; document.body.dataset.stream = 'open';
    });
    es.addEventListener('error', function () { conn.textContent = 'reconnecting'; conn.className = 'down'; document.body.dataset.stream = 'down'; });
    es.addEventListener('flow', function (m) { onFlow(JSON.parse(m.data)); });
    es.addEventListener('missed', function (m) { seen.missed += Number(m.data); queueRender(); });
  }

  // The stream starts once the pods are known, so its first records are named by them too.
  loadNode().then(function () { document.body.dataset.state = 'ready'; }, function (e) { document.body.dataset.state = 'error'; document.getElementById('conn').textContent = String(e.message || e); }).then(connect);
  setInterval(function () { loadNode().catch(function () {}); }, 5000);
})();
</script>
</body>
</html>
`;
