//! The console page: server-rendered HTML with an inline SVG chart and a small inline script that
//! refreshes the live parts from `api/overview`. Every link is relative to a `<base>` built from
//! the path prefix, so the page works behind an ingress; every text from the database, the queue
//! or Redis goes through [`esc`] (the script only ever sets `textContent`).

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::api::Overview;
use super::history::Point;
use crate::jobs::JobReport;
use crate::jobs::status::{duration_text, eta_text, rate_text};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page. `base` is the path the console is served under, ending in `/`.
pub fn render(o: &Overview, base: &str) -> String {
    let mut h = String::with_capacity(64 * 1024 + o.jobs.len() * 600);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="{base}">
<noscript><meta http-equiv="refresh" content="10"></noscript>
<title>profile-worker console</title>
<style>{STYLE}</style></head>
<body data-actions="{actions}">
<header><h1>profile-worker</h1><span id="updated">as of {at} UTC from {replica}</span></header>
"#,
        base = esc(base),
        actions = o.actions_enabled,
        at = o.generated_at.format("%Y-%m-%d %H:%M:%S"),
        replica = esc(&o.replica),
    );
    h.push_str(r#"<ul id="problems">"#);
    for p in &o.problems {
        let _ = write!(h, "<li>{}</li>", esc(p));
    }
    h.push_str("</ul>\n<main>\n");

    summary(&mut h, o);
    jobs(&mut h, o);
    in_flight(&mut h, o);
    dead_letters(&mut h, o);
    if o.actions_enabled {
        actions(&mut h);
    }
    let _ = writeln!(
        h,
        "<section id=\"chart\"><h2>This replica, last hour</h2>{}</section>",
        chart(&o.chart, o.generated_at)
    );
    let _ = write!(h, "</main>\n<script>{SCRIPT}</script>\n</body></html>\n");
    h
}

fn summary(h: &mut String, o: &Overview) {
    h.push_str("<section id=\"summary\" class=\"cards\">");
    let q = |v: Option<u64>| v.map_or("–".to_string(), |n| n.to_string());
    let _ = write!(
        h,
        "<div class=\"card\"><h2>Queue</h2><p><b id=\"q-visible\">{}</b> visible · \
         <b id=\"q-inflight\">{}</b> in flight · <b id=\"q-delayed\">{}</b> delayed</p></div>",
        q(o.queue.as_ref().map(|d| d.visible)),
        q(o.queue.as_ref().map(|d| d.in_flight)),
        q(o.queue.as_ref().map(|d| d.delayed)),
    );
    let _ = write!(
        h,
        "<div class=\"card\"><h2>Dead letters</h2><p><b id=\"dlq-depth\">{}</b> waiting</p></div>",
        match &o.dead_letter {
            Some(d) => (d.visible + d.in_flight + d.delayed).to_string(),
            None => "no DLQ".into(),
        }
    );
    let spend = match &o.spend_today {
        Some(u) => format!(
            "<b id=\"spend-cost\">${:.4}</b> · <span id=\"spend-detail\">{} profile(s), {} call(s), \
             {} in + {} out tokens</span>",
            u.cost_usd, u.profiles, u.calls, u.input_tokens, u.output_tokens
        ),
        None => "<b id=\"spend-cost\">–</b> <span id=\"spend-detail\"></span>".into(),
    };
    let _ = write!(
        h,
        "<div class=\"card\"><h2>Spend today (UTC)</h2><p>{spend}</p>\
         <p class=\"muted\">No daily cap or pause is configured in this version.</p></div>"
    );
    h.push_str("</section>\n");
}

fn jobs(h: &mut String, o: &Overview) {
    h.push_str(
        "<section><h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>Job</th><th>Status</th>\
         <th>Progress</th><th>Succeeded</th><th>Failed</th><th>Rate</th><th>ETA</th>\
         <th>Elapsed</th><th>Tokens in/out</th><th>Cost</th><th></th></tr></thead><tbody>",
    );
    for r in &o.jobs {
        job_row(h, r, o.actions_enabled);
    }
    if o.jobs.is_empty() {
        h.push_str("<tr><td colspan=\"11\" class=\"muted\">No jobs yet.</td></tr>");
    }
    h.push_str("</tbody></table>");
    let failing: Vec<&JobReport> = o
        .jobs
        .iter()
        .filter(|r| r.job.error_log.as_deref().is_some_and(|l| !l.is_empty()))
        .collect();
    h.push_str("<div id=\"errors\">");
    for r in failing {
        let log = r.job.error_log.as_deref().unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let _ = write!(
            h,
            "<details><summary>{} failure(s) of job <code>{}</code></summary><pre>",
            lines.len(),
            esc(&r.job.id)
        );
        // The newest failures matter most; a long log is cut to its last 50 lines.
        for line in lines.iter().rev().take(50).rev() {
            let _ = writeln!(h, "{}", esc(line));
        }
        h.push_str("</pre></details>");
    }
    h.push_str("</div></section>\n");
}

fn job_row(h: &mut String, r: &JobReport, actions: bool) {
    let j = &r.job;
    let p = &r.progress;
    let pct = if j.total_entities > 0 {
        (p.processed as f64 * 100.0 / f64::from(j.total_entities)).min(100.0)
    } else {
        100.0
    };
    let id = esc(&j.id);
    let _ = write!(
        h,
        "<tr data-job=\"{id}\"><td><code>{id}</code></td><td class=\"status s-{st}\">{st}</td>\
         <td><div class=\"bar\"><div style=\"width:{pct:.1}%\"></div></div>\
         <span class=\"pct\">{processed}/{total} ({pct:.0}%)</span></td>\
         <td>{ok}</td><td>{failed}</td><td>{rate}</td><td>{eta}</td><td>{elapsed}</td>\
         <td>{tin}/{tout}</td><td>${cost:.4}</td><td>",
        st = j.status.as_str(),
        processed = p.processed,
        total = j.total_entities,
        ok = j.succeeded,
        failed = j.failed,
        rate = esc(&rate_text(p)),
        eta = esc(&eta_text(p)),
        elapsed = esc(&duration_text(p.elapsed)),
        tin = r.usage.input_tokens,
        tout = r.usage.output_tokens,
        cost = r.usage.cost_usd,
    );
    if actions && !j.status.is_terminal() {
        let _ = write!(
            h,
            "<button type=\"button\" class=\"cancel\" data-job=\"{id}\">Cancel</button>"
        );
    }
    h.push_str("</td></tr>");
}

fn in_flight(h: &mut String, o: &Overview) {
    h.push_str(
        "<section><h2>In flight</h2><table id=\"inflight\"><thead><tr><th>Replica</th>\
         <th>Entity</th><th>Job</th><th>Attempt</th><th>Elapsed</th></tr></thead><tbody>",
    );
    let mut any = false;
    for set in &o.in_flight {
        for item in &set.items {
            any = true;
            let elapsed = (o.generated_at - item.started_at).num_milliseconds().max(0) as f64;
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{:.1}s</td></tr>",
                esc(&set.replica),
                esc(&item.entity),
                esc(item.job_id.as_deref().unwrap_or("–")),
                item.attempt,
                elapsed / 1000.0
            );
        }
    }
    if !any {
        h.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing in flight.</td></tr>");
    }
    h.push_str("</tbody></table></section>\n");
}

fn dead_letters(h: &mut String, o: &Overview) {
    h.push_str("<section><h2>Dead-letter queue</h2><p id=\"redrive-status\">");
    if let Some(s) = &o.redrive {
        let _ = write!(
            h,
            "Last redrive ({}): {} — {} moved{}",
            s.mode,
            esc(&s.status),
            s.moved,
            s.failure
                .as_deref()
                .map(|f| format!(" — {}", esc(f)))
                .unwrap_or_default()
        );
    }
    h.push_str(
        "</p><table id=\"dlq\"><thead><tr><th>Sent</th><th>Reason</th><th>Receives</th>\
         <th>Body</th></tr></thead><tbody>",
    );
    for d in &o.dead_letters {
        let reason = d
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code>{}</td></tr>",
            d.sent_at
                .map(|t| t.format("%H:%M:%S").to_string())
                .unwrap_or_default(),
            esc(&reason),
            d.receive_count,
            esc(&d.body_preview),
            if d.body_bytes > d.body_preview.len() {
                format!(" <span class=\"muted\">({} bytes)</span>", d.body_bytes)
            } else {
                String::new()
            }
        );
    }
    if o.dead_letters.is_empty() {
        h.push_str("<tr><td colspan=\"4\" class=\"muted\">Empty.</td></tr>");
    }
    h.push_str("</tbody></table></section>\n");
}

fn actions(h: &mut String) {
    h.push_str(
        "<section id=\"actions\"><h2>Actions</h2>\
         <p class=\"muted\">Need the console token (sent as a bearer token; kept in this tab only).</p>\
         <label>Token <input type=\"password\" id=\"token\" autocomplete=\"off\"></label> \
         <button type=\"button\" id=\"redrive\">Redrive dead letters</button> \
         <label>Entity <input id=\"entity\" placeholder=\"author:12\"></label> \
         <button type=\"button\" id=\"regenerate\">Regenerate</button>\
         <p id=\"action-result\" role=\"status\"></p></section>\n",
    );
}

/// Throughput (bars) and mean latency (line) over the last hour, as inline SVG.
pub fn chart(points: &[Point], now: DateTime<Utc>) -> String {
    const W: f64 = 720.0;
    const H: f64 = 140.0;
    const PAD: f64 = 24.0;
    if points.is_empty() {
        return "<p class=\"muted\">No samples yet.</p>".into();
    }
    let max_rate = points.iter().map(|p| p.per_minute).fold(0.0, f64::max);
    let max_lat = points
        .iter()
        .filter_map(|p| p.mean_seconds)
        .fold(0.0, f64::max);
    let x = |at: DateTime<Utc>| {
        let age = (now - at).num_seconds().clamp(0, 3600) as f64;
        PAD + (W - 2.0 * PAD) * (1.0 - age / 3600.0)
    };
    let y = |v: f64, max: f64| {
        if max > 0.0 {
            H - PAD - (H - 2.0 * PAD) * v / max
        } else {
            H - PAD
        }
    };
    let mut s = format!(
        "<svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" \
         aria-label=\"throughput and latency\"><rect x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" \
         class=\"bg\"/>"
    );
    let bar = ((W - 2.0 * PAD) / 60.0 - 2.0).max(1.0);
    for p in points {
        let top = y(p.per_minute, max_rate);
        let _ = write!(
            s,
            "<rect class=\"rate\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\"/>",
            x(p.at) - bar,
            (H - PAD - top).max(0.0)
        );
    }
    let line: Vec<String> = points
        .iter()
        .filter_map(|p| Some(format!("{:.1},{:.1}", x(p.at), y(p.mean_seconds?, max_lat))))
        .collect();
    if !line.is_empty() {
        let _ = write!(s, "<polyline class=\"lat\" points=\"{}\"/>", line.join(" "));
    }
    let _ = write!(
        s,
        "<text x=\"{PAD}\" y=\"14\" class=\"rate-t\">max {max_rate:.1} msg/min</text>\
         <text x=\"{:.0}\" y=\"14\" class=\"lat-t\">max mean latency {max_lat:.2} s</text>\
         <text x=\"{PAD}\" y=\"{:.0}\">−60 min</text><text x=\"{:.0}\" y=\"{:.0}\">now</text></svg>",
        W / 2.0,
        H - 6.0,
        W - PAD - 20.0,
        H - 6.0
    );
    s
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}\
header{display:flex;gap:1em;align-items:baseline;padding:.6em 1.2em;background:#1d2330;color:#fff}\
header h1{font-size:1.2em;margin:0}main{padding:0 1.2em 2em}h2{font-size:1em;margin:1.2em 0 .4em}\
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{background:#fff;border-radius:6px;padding:0 1em;\
box-shadow:0 1px 2px #0002;min-width:16em}table{border-collapse:collapse;background:#fff;width:100%}\
th,td{padding:.3em .6em;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}\
th{background:#eef0f3;font-weight:600}.bar{display:inline-block;width:8em;height:.8em;\
background:#e3e6ea;border-radius:3px;overflow:hidden;vertical-align:middle;margin-right:.5em}\
.bar div{height:100%;background:#2f7d4f}.s-failed,.s-cancelled{color:#a33}.s-in_progress{color:#2556a8}\
.muted{color:#6b7280}#problems{color:#a33}pre{background:#fff;padding:.5em;overflow:auto;max-height:14em}\
code{font-size:.92em}svg .bg{fill:#fff}svg .rate{fill:#9cc3a9}svg .lat{fill:none;stroke:#2556a8;\
stroke-width:2}svg text{font-size:11px;fill:#6b7280}svg .lat-t{fill:#2556a8}svg .rate-t{fill:#2f7d4f}\
#actions input{margin-right:.5em}";

/// Refreshes jobs, queue, dead letters, in-flight work and spend every 3 s from `api/overview`,
/// and runs the actions with the token typed into the page.
const SCRIPT: &str = r#"
(function(){
const $=s=>document.querySelector(s);
function el(tag,text,cls){const e=document.createElement(tag);if(text!==undefined)e.textContent=text;if(cls)e.className=cls;return e;}
function empty(tb,n,text){const td=el('td',text,'muted');td.colSpan=n;tb.appendChild(row([td]));}
function row(cells){const tr=el('tr');cells.forEach(c=>{tr.appendChild(c instanceof Node?c:el('td',String(c)));});return tr;}
function dur(s){if(s==null)return '–';s=Math.round(s);const h=Math.floor(s/3600),m=Math.floor(s%3600/60),x=s%60;return h?h+'h'+String(m).padStart(2,'0')+'m':m?m+'m'+String(x).padStart(2,'0')+'s':x+'s';}
const actions=document.body.dataset.actions==='true';
function jobs(list){const tb=$('#jobs tbody');tb.replaceChildren();
 list.forEach(j=>{const pct=j.total_entities>0?Math.min(100,j.processed*100/j.total_entities):100;
  const bar=el('td');const b=el('div',undefined,'bar');const f=el('div');f.style.width=pct.toFixed(1)+'%';b.appendChild(f);bar.appendChild(b);
  bar.appendChild(el('span',j.processed+'/'+j.total_entities+' ('+Math.round(pct)+'%)','pct'));
  const id=el('td');id.appendChild(el('code',j.job_id));
  const act=el('td');if(actions&&!['completed','failed','cancelled'].includes(j.status)){const c=el('button','Cancel','cancel');c.type='button';c.dataset.job=j.job_id;act.appendChild(c);}
  const tr=row([id,el('td',j.status,'status s-'+j.status),bar,j.succeeded,j.failed,
   j.rate_per_minute==null?'–':j.rate_per_minute.toFixed(1)+'/min',dur(j.eta_seconds),dur(j.elapsed_seconds),
   j.usage.input_tokens+'/'+j.usage.output_tokens,'$'+j.usage.estimated_cost_usd.toFixed(4),act]);
  tr.dataset.job=j.job_id;tb.appendChild(tr);});
 if(!list.length)empty(tb,11,'No jobs yet.');}
function inflight(sets,now){const tb=$('#inflight tbody');tb.replaceChildren();let any=false;
 sets.forEach(s=>s.items.forEach(i=>{any=true;const c=el('td');c.appendChild(el('code',i.job_id||'–'));
  tb.appendChild(row([s.replica,i.entity,c,i.attempt,((Date.parse(now)-Date.parse(i.started_at))/1000).toFixed(1)+'s']));}));
 if(!any)empty(tb,5,'Nothing in flight.');}
function dlq(d){const depth=d.depth;$('#dlq-depth').textContent=depth?depth.visible+depth.in_flight+depth.delayed:'no DLQ';
 const tb=$('#dlq tbody');tb.replaceChildren();
 d.recent.forEach(m=>{const body=el('td');body.appendChild(el('code',m.body_preview));
  tb.appendChild(row([m.sent_at?m.sent_at.substr(11,8):'',Object.entries(m.attributes).map(([k,v])=>k+'='+v).join('; '),m.receive_count,body]));});
 if(!d.recent.length)empty(tb,4,'Empty.');
 const r=d.redrive;$('#redrive-status').textContent=r?'Last redrive ('+r.mode+'): '+r.status+' — '+r.moved+' moved'+(r.failure?' — '+r.failure:''):'';}
function refresh(){fetch('api/overview',{cache:'no-store'}).then(r=>r.json()).then(o=>{
 jobs(o.jobs);inflight(o.in_flight,o.generated_at);dlq(o.dead_letter);
 const q=o.queue;['visible','inflight','delayed'].forEach(k=>{$('#q-'+k).textContent=q?q[k==='inflight'?'in_flight':k]:'–';});
 const t=o.spend.today;if(t){$('#spend-cost').textContent='$'+t.estimated_cost_usd.toFixed(4);
  $('#spend-detail').textContent=t.profiles+' profile(s), '+t.calls+' call(s), '+t.input_tokens+' in + '+t.output_tokens+' out tokens';}
 const p=$('#problems');p.replaceChildren();o.problems.forEach(x=>p.appendChild(el('li',x)));
 $('#updated').textContent='as of '+o.generated_at.substr(0,19).replace('T',' ')+' UTC from '+o.replica;
}).catch(e=>{$('#updated').textContent='refresh failed: '+e;});}
setInterval(refresh,3000);
const tok=$('#token');if(tok){tok.value=sessionStorage.getItem('pw-token')||'';tok.addEventListener('change',()=>sessionStorage.setItem('pw-token',tok.value));}
function act(path){const out=$('#action-result');out.textContent='…';
 fetch(path,{method:'POST',headers:{'Authorization':'Bearer '+(tok?tok.value:'')}})
 .then(r=>r.json().then(b=>{out.textContent=r.status+': '+(b.message||JSON.stringify(b));refresh();}))
 .catch(e=>{out.textContent='failed: '+e;});}
document.addEventListener('click',e=>{const t=e.target;
 if(t.matches('button.cancel'))act('api/jobs/'+encodeURIComponent(t.dataset.job)+'/cancel');
 else if(t.id==='redrive')act('api/dlq/redrive');
 else if(t.id==='regenerate'){const v=$('#entity').value.trim().split(':');act('api/entities/'+encodeURIComponent(v[0]||'')+'/'+encodeURIComponent(v[1]||'')+'/regenerate');}});
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<b a="1">&'"#), "&lt;b a=&quot;1&quot;&gt;&amp;&#39;");
    }
}
