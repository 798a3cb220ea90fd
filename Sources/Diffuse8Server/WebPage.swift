/// The web page served at `/`: one self-contained HTML file (no external scripts, styles or fonts) that drives
/// the same `/sdapi/v1` API as any client.
enum WebPage {
    static let html = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Diffuse8</title>
<style>
  :root { --bg: #f5f5f7; --panel: #fff; --fg: #1d1d1f; --muted: #6e6e73; --accent: #3b5bdb; --border: #d2d2d7; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background: var(--bg); color: var(--fg); }
  header { padding: 12px 20px; background: var(--panel); border-bottom: 1px solid var(--border); display: flex; align-items: center; gap: 16px; }
  header h1 { font-size: 18px; margin: 0; }
  header .model { margin-left: auto; color: var(--muted); }
  main { display: grid; grid-template-columns: 360px 1fr; gap: 16px; padding: 16px 20px; }
  .panel { background: var(--panel); border: 1px solid var(--border); border-radius: 8px; padding: 14px; }
  label { display: block; font-weight: 600; margin: 8px 0 4px; }
  textarea, input, select { width: 100%; padding: 6px 8px; border: 1px solid var(--border); border-radius: 6px; font: inherit; }
  textarea { resize: vertical; min-height: 64px; }
  .row { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; }
  .buttons { display: flex; gap: 8px; margin-top: 14px; }
  button { flex: 1; padding: 9px; border: 0; border-radius: 6px; font: inherit; font-weight: 600; cursor: pointer; background: var(--accent); color: #fff; }
  button.secondary { background: #e5e5ea; color: var(--fg); }
  button:disabled { opacity: .5; cursor: default; }
  .progress { height: 10px; background: #e5e5ea; border-radius: 5px; overflow: hidden; margin: 4px 0 6px; }
  .progress > div { height: 100%; width: 0; background: var(--accent); transition: width .2s; }
  #status { color: var(--muted); min-height: 20px; }
  #result { display: flex; gap: 16px; align-items: flex-start; flex-wrap: wrap; }
  #image { width: 384px; height: 384px; image-rendering: pixelated; background: #e5e5ea; border-radius: 6px; object-fit: contain; }
  #parameters { flex: 1; min-width: 240px; white-space: pre-wrap; font: 12px/1.5 ui-monospace, monospace; background: var(--bg); padding: 10px; border-radius: 6px; margin: 0; }
  #error { color: #c92a2a; white-space: pre-wrap; }
  h2 { font-size: 15px; margin: 16px 0 8px; }
  #gallery { display: flex; flex-wrap: wrap; gap: 8px; }
  #gallery img { width: 96px; height: 96px; image-rendering: pixelated; border-radius: 4px; cursor: pointer; border: 2px solid transparent; }
  #gallery img.selected { border-color: var(--accent); }
</style>
</head>
<body>
<header><h1>Diffuse8</h1><span>text to image</span><span class="model">model: <select id="model" style="width:auto"></select></span></header>
<main>
  <form class="panel" id="form">
    <label for="prompt">Prompt</label>
    <textarea id="prompt">a large red circle above a small blue square on a white background</textarea>
    <label for="negative">Negative prompt</label>
    <textarea id="negative" style="min-height:40px"></textarea>
    <label for="sampler">Sampler</label>
    <select id="sampler"></select>
    <div class="row">
      <div><label for="steps">Steps</label><input id="steps" type="number" min="1" max="150" value="20"></div>
      <div><label for="cfg">CFG scale</label><input id="cfg" type="number" min="0" max="30" step="0.5" value="5"></div>
    </div>
    <div class="row">
      <div><label for="width">Width</label><input id="width" type="number" min="8" step="8" placeholder="model size"></div>
      <div><label for="height">Height</label><input id="height" type="number" min="8" step="8" placeholder="model size"></div>
    </div>
    <label for="seed">Seed (-1: random)</label>
    <input id="seed" type="number" value="-1">
    <div class="buttons">
      <button type="submit" id="generate">Generate</button>
      <button type="button" class="secondary" id="interrupt" disabled>Interrupt</button>
    </div>
  </form>
  <section class="panel">
    <div class="progress"><div id="bar"></div></div>
    <div id="status">Ready.</div>
    <div id="error"></div>
    <div id="result">
      <img id="image" alt="">
      <pre id="parameters"></pre>
    </div>
    <h2>Made since this page was opened</h2>
    <div id="gallery"></div>
  </section>
</main>
<script>
const $ = id => document.getElementById(id);
const api = (path, options) => fetch('/sdapi/v1/' + path, options).then(async r => {
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const detail = body && body.detail;
    const text = Array.isArray(detail) ? detail.map(d => d.loc.slice(1).join('.') + ': ' + d.msg).join('\n') : (detail || r.statusText);
    throw new Error(r.status + ' ' + text);
  }
  return body;
});
let polling = null;

async function init() {
  const [samplers, models, options] = await Promise.all([api('samplers'), api('sd-models'), api('options')]);
  for (const s of samplers) $('sampler').add(new Option(s.name, s.name));
  for (const m of models) $('model').add(new Option(m.title, m.title));
  $('model').value = options.sd_model_checkpoint;
}

$('model').addEventListener('change', async () => {
  $('status').textContent = 'Loading ' + $('model').value + '…';
  try { await api('options', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ sd_model_checkpoint: $('model').value }) });
        $('status').textContent = 'Model: ' + $('model').value; }
  catch (e) { $('error').textContent = e.message; }
});

async function poll() {
  try {
    const p = await api('progress');
    if (p.state.job_count > 0) {
      $('bar').style.width = (100 * p.progress).toFixed(1) + '%';
      $('status').textContent = `Image ${p.state.job_no + 1}/${p.state.job_count}, step ${p.state.sampling_step}/${p.state.sampling_steps}` +
        (p.eta_relative > 0 ? `, about ${p.eta_relative.toFixed(1)} s left` : '') +
        (p.state.queue_depth > 0 ? ` (${p.state.queue_depth} waiting)` : '');
      if (p.current_image) $('image').src = 'data:image/png;base64,' + p.current_image;
    }
  } catch (e) { /* the next poll retries */ }
}

function show(src, parameters, thumb) {
  $('image').src = src;
  $('parameters').textContent = parameters;
  document.querySelectorAll('#gallery img').forEach(i => i.classList.toggle('selected', i === thumb));
}

$('form').addEventListener('submit', async event => {
  event.preventDefault();
  const body = {
    prompt: $('prompt').value, negative_prompt: $('negative').value, sampler_name: $('sampler').value,
    steps: Number($('steps').value), cfg_scale: Number($('cfg').value), seed: Number($('seed').value),
  };
  if ($('width').value) body.width = Number($('width').value);
  if ($('height').value) body.height = Number($('height').value);
  $('generate').disabled = true; $('interrupt').disabled = false; $('error').textContent = '';
  $('bar').style.width = '0'; $('status').textContent = 'Queued…';
  polling = setInterval(poll, 250);
  const started = performance.now();
  try {
    const r = await api('txt2img', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    const info = JSON.parse(r.info);
    r.images.forEach((b64, i) => {
      const src = 'data:image/png;base64,' + b64;
      const thumb = new Image();
      thumb.src = src; thumb.title = info.infotexts[i];
      thumb.addEventListener('click', () => show(src, info.infotexts[i], thumb));
      $('gallery').prepend(thumb);
      if (i === 0) show(src, info.infotexts[i], thumb);
    });
    $('bar').style.width = '100%';
    $('status').textContent = (info.interrupted ? 'Interrupted' : 'Done') + ` in ${((performance.now() - started) / 1000).toFixed(2)} s, seed ${info.seed}.`;
  } catch (e) {
    $('error').textContent = e.message; $('status').textContent = 'Failed.';
  } finally {
    clearInterval(polling);
    $('generate').disabled = false; $('interrupt').disabled = true;
  }
});

$('interrupt').addEventListener('click', () => api('interrupt', { method: 'POST' }));
init().catch(e => { $('error').textContent = e.message; });
</script>
</body>
</html>
"""#
}
