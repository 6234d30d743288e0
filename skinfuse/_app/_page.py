"""The page itself: one HTML document, its style and script inline (no files, no CDN)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>skinfuse: one lesion</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.4rem;margin:0 0 .3rem}
.notice{background:#fff4e5;border-left:4px solid #e69500;padding:.5rem .8rem;margin:.6rem 0}
form{display:flex;flex-wrap:wrap;gap:.8rem;align-items:end;margin:.8rem 0}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.2rem}
#fields{display:flex;gap:.8rem;flex-wrap:wrap;align-items:end}
#error{color:#a00;font-weight:600;min-height:1.2em}
.row{display:flex;gap:1rem;flex-wrap:wrap}
.row figure{margin:0}.row img{max-width:320px;image-rendering:pixelated;border:1px solid #ccc}
figcaption{font-size:.8rem;color:#555}
.bar{display:flex;align-items:center;gap:.5rem;font-size:.85rem;margin:.15rem 0}
.bar .name{width:16rem;text-align:right}.bar .fill{background:#3b6ea5;height:1rem}
.bar.inset .name{font-weight:700}
#set{margin:.6rem 0}.refer{color:#a00;font-weight:700}.norefer{color:#185c2e;font-weight:700}
table{border-collapse:collapse;font-size:.85rem}td{border-top:1px solid #ddd;padding:.2rem .5rem;vertical-align:top}
</style></head><body>
<h1>skinfuse: one lesion, explained</h1>
<p class="notice" id="notice"></p>
<form id="form" onsubmit="return false">
  <label>Dermoscopic image <input type="file" id="image" accept="image/*"></label>
  <span id="fields"></span>
  <button id="go" type="button">Analyse</button>
</form>
<div id="error" role="alert"></div>
<div id="busy" hidden>analysing...</div>
<div id="result" hidden>
  <h2>Most probable: <span id="top"></span></h2>
  <div class="row">
    <figure><img id="shown" alt="the uploaded image"><figcaption>image</figcaption></figure>
    <figure><img id="overlay" alt="Grad-CAM overlay"><figcaption>Grad-CAM: where the model
      found evidence for its top class</figcaption></figure>
    <div><div id="bars"></div><div id="set"></div></div>
  </div>
</div>
<h2>The model</h2><table id="card"></table>
<script>
let FORM = null;
function el(tag, attrs, text){const e=document.createElement(tag);
  for(const k in (attrs||{})) e.setAttribute(k, attrs[k]); if(text!==undefined) e.textContent=text; return e;}
async function init(){
  FORM = await (await fetch('/api/form')).json();
  document.getElementById('notice').textContent = FORM.notice;
  const span = document.getElementById('fields');
  for(const f of FORM.fields){
    const label = el('label', {}, f.name === 'localization' ? 'body site' : f.name);
    let input;
    if(f.kind === 'category'){
      input = el('select', {id: 'f-' + f.name, name: f.name});
      input.appendChild(el('option', {value: ''}, '(not given)'));
      for(const c of f.choices) input.appendChild(el('option', {value: c}, c));
    } else {
      input = el('input', {id: 'f-' + f.name, name: f.name, type: 'text', inputmode: 'decimal',
                           placeholder: f.min !== undefined ? f.min + '-' + f.max : ''});
    }
    label.appendChild(input); span.appendChild(label);
  }
  const card = document.getElementById('card');
  for(const [k, v] of Object.entries(FORM.card)){
    const tr = el('tr'); tr.appendChild(el('td', {}, k)); tr.appendChild(el('td', {}, v)); card.appendChild(tr);
  }
}
function show(r){
  document.getElementById('top').textContent = r.top;
  document.getElementById('shown').src = r.image;
  const ov = document.getElementById('overlay');
  if(r.overlay){ov.src = r.overlay; ov.hidden = false;} else ov.hidden = true;
  const bars = document.getElementById('bars'); bars.textContent = '';
  const inset = new Set(r.prediction_set || []);
  for(const p of r.probabilities){
    const row = el('div', {class: 'bar' + (inset.has(p.name) ? ' inset' : ''), 'data-class': p.class});
    row.appendChild(el('span', {class: 'name'}, p.name));
    const fill = el('span', {class: 'fill'}); fill.style.width = (p.probability * 200) + 'px';
    row.appendChild(fill); row.appendChild(el('span', {}, (100 * p.probability).toFixed(1) + ' %'));
    bars.appendChild(row);
  }
  const set = document.getElementById('set'); set.textContent = '';
  if(r.prediction_set !== null){
    set.appendChild(el('div', {}, 'Prediction set at ' + Math.round(100 * r.coverage) +
      ' % coverage: ' + (r.prediction_set.length ? r.prediction_set.join(', ') : '(empty: no class plausible enough)')));
    set.appendChild(el('div', {id: 'refer', class: r.refer ? 'refer' : 'norefer'},
      r.refer ? 'Refer: melanoma is in the set, or the set is not one class'
              : 'No referral flag: one class, not melanoma'));
  } else {
    set.appendChild(el('div', {}, 'This model has no prediction sets (train it with --coverage).'));
  }
  document.getElementById('result').hidden = false;
}
async function analyse(){
  const err = document.getElementById('error'); err.textContent = '';
  const file = document.getElementById('image').files[0];
  if(!file){err.textContent = 'choose an image file first'; return;}
  const q = new URLSearchParams();
  for(const f of FORM.fields){const v = document.getElementById('f-' + f.name).value.trim(); if(v !== '') q.set(f.name, v);}
  document.getElementById('busy').hidden = false;
  try{
    const resp = await fetch('/api/analyse?' + q.toString(), {method: 'POST', body: file});
    const body = await resp.json();
    if(!resp.ok){document.getElementById('result').hidden = true; err.textContent = body.error; return;}
    show(body);
  }catch(e){err.textContent = 'the server did not answer: ' + e;}
  finally{document.getElementById('busy').hidden = true;}
}
document.getElementById('go').addEventListener('click', analyse);
init();
</script></body></html>
"""
