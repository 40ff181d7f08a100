//! The workunit tree of a build (pure: no I/O), from what S3 holds: the final report's
//! `workunits` when the build finished, else the live `workunits/` calls merged (the
//! highest `version` of each workunit wins).
//!
//! Workunits name their parents (`parent_ids`, or the older single `parent_id`); the first
//! parent present in the run is the node's parent, and the others are roots. Children are in
//! start order; `duration_ms` is end minus start when both are known.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn parents(w: &Value) -> Vec<String> {
    let mut out: Vec<String> = w["parent_ids"].as_array().into_iter().flatten().filter_map(text).collect();
    if let Some(p) = text(&w["parent_id"]) {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// One workunit as the API shows it (without children).
fn node(w: &Value) -> Option<(String, Map<String, Value>, Vec<String>, f64)> {
    let id = text(&w["workunit_id"])?;
    let start = number(&w["start_usecs"]);
    let end = number(&w["end_usecs"]);
    let duration_ms = match (start, end) {
        (Some(s), Some(e)) if e >= s => json!(((e - s) / 1000.0 * 1000.0).round() / 1000.0),
        _ => Value::Null,
    };
    let mut n = Map::new();
    n.insert("workunit_id".into(), json!(id));
    n.insert("name".into(), json!(text(&w["name"])));
    n.insert("description".into(), json!(text(&w["description"])));
    n.insert("state".into(), json!(text(&w["state"]).unwrap_or_else(|| if end.is_some() { "finished".into() } else { "started".into() })));
    n.insert("start_usecs".into(), json!(start.map(|s| s as i64)));
    n.insert("end_usecs".into(), json!(end.map(|e| e as i64)));
    n.insert("duration_ms".into(), duration_ms);
    if let Some(counters) = w["counters"].as_object().filter(|c| !c.is_empty()) {
        n.insert("counters".into(), Value::Object(counters.clone()));
    }
    Some((id, n, parents(w), start.unwrap_or(f64::MAX)))
}

/// The workunits of a final report (a `build_stats` document, possibly wrapped).
pub fn from_final_report(doc: &Value) -> Vec<Value> {
    let list = if doc["workunits"].is_array() { &doc["workunits"] } else { &doc["build_stats"]["workunits"] };
    list.as_array().cloned().unwrap_or_default()
}

/// Merge live updates (each a `{"workunits": [...]}` list): the highest version of each
/// workunit, the later update on a tie.
pub fn merge_live(updates: &[Value]) -> Vec<Value> {
    let mut best: HashMap<String, (f64, usize, Value)> = HashMap::new();
    let mut order = 0usize;
    for update in updates {
        for w in update["workunits"].as_array().into_iter().flatten() {
            let Some(id) = text(&w["workunit_id"]) else { continue };
            order += 1;
            let version = number(&w["version"]).unwrap_or(0.0);
            match best.get(&id) {
                Some((v, _, _)) if *v > version => {}
                _ => {
                    best.insert(id, (version, order, w.clone()));
                }
            }
        }
    }
    let mut list: Vec<(usize, Value)> = best.into_values().map(|(_, o, w)| (o, w)).collect();
    list.sort_by_key(|(o, _)| *o);
    list.into_iter().map(|(_, w)| w).collect()
}

/// The tree: root nodes, each with `children`. Returns (roots, number of workunits).
pub fn tree(workunits: &[Value]) -> (Vec<Value>, usize) {
    let mut nodes: Vec<(String, Map<String, Value>, Vec<String>, f64)> = workunits.iter().filter_map(node).collect();
    // A workunit repeated in one list: keep the first.
    let mut seen = std::collections::HashSet::new();
    nodes.retain(|(id, ..)| seen.insert(id.clone()));
    let index: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, (id, ..))| (id.clone(), i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    for (i, (id, _, parents, _)) in nodes.iter().enumerate() {
        match parents.iter().filter(|p| *p != id).find_map(|p| index.get(p)) {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
    }
    // A cycle of parents leaves nodes unreachable from any root: make them roots.
    let mut reachable = vec![false; nodes.len()];
    let mut stack: Vec<usize> = roots.clone();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut reachable[i], true) {
            stack.extend(&children[i]);
        }
    }
    for i in 0..nodes.len() {
        if !reachable[i] {
            roots.push(i);
            children.iter_mut().for_each(|c| c.retain(|&x| x != i));
            let mut stack = vec![i];
            while let Some(j) = stack.pop() {
                if !std::mem::replace(&mut reachable[j], true) {
                    stack.extend(&children[j]);
                }
            }
        }
    }
    let starts: Vec<f64> = nodes.iter().map(|n| n.3).collect();
    let by_start = |list: &mut Vec<usize>| list.sort_by(|a, b| starts[*a].total_cmp(&starts[*b]).then(a.cmp(b)));
    children.iter_mut().for_each(|c| by_start(c));
    by_start(&mut roots);
    let count = nodes.len();
    let mut built: Vec<Option<Map<String, Value>>> = nodes.into_iter().map(|n| Some(n.1)).collect();
    // Build bottom-up without recursion (trees of tens of thousands of nodes are normal).
    let mut order = Vec::with_capacity(count);
    let mut stack: Vec<usize> = roots.clone();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(&children[i]);
    }
    let mut done: HashMap<usize, Value> = HashMap::new();
    for &i in order.iter().rev() {
        let mut n = built[i].take().expect("each node once");
        let kids: Vec<Value> = children[i].iter().map(|c| done.remove(c).expect("children first")).collect();
        n.insert("children".into(), Value::Array(kids));
        done.insert(i, Value::Object(n));
    }
    (roots.iter().map(|r| done.remove(r).expect("root built")).collect(), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_make_the_tree_with_durations_in_start_order() {
        let list = vec![
            json!({"workunit_id": "b", "name": "child2", "parent_ids": ["a"], "start_usecs": 3000, "end_usecs": 4500}),
            json!({"workunit_id": "a", "name": "root", "start_usecs": 1000, "end_usecs": 9000}),
            json!({"workunit_id": "c", "name": "child1", "parent_id": "a", "start_usecs": 2000}),
            json!({"workunit_id": "d", "name": "orphan", "parent_ids": ["gone"], "start_usecs": 500}),
            json!({"workunit_id": "x", "parent_ids": ["y"]}),
            json!({"workunit_id": "y", "parent_ids": ["x"]}),
        ];
        let (roots, count) = tree(&list);
        assert_eq!(count, 6);
        let names: Vec<&str> = roots.iter().map(|r| r["workunit_id"].as_str().unwrap()).collect();
        assert_eq!(names[..2], ["d", "a"], "roots in start order");
        assert_eq!(roots.len(), 3, "a parent cycle still shows up, once: {names:?}");
        let root = &roots[1];
        assert_eq!(root["duration_ms"], json!(8.0));
        let kids: Vec<&str> = root["children"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(kids, ["child1", "child2"]);
        assert_eq!(root["children"][0]["state"], "started");
        assert_eq!(root["children"][1]["duration_ms"], json!(1.5));
    }

    #[test]
    fn live_updates_merge_by_version() {
        let merged = merge_live(&[
            json!({"workunits": [{"workunit_id": "a", "version": 1, "state": "started"}, {"workunit_id": "b", "version": 1}]}),
            json!({"workunits": [{"workunit_id": "a", "version": 2, "state": "finished"}]}),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged.iter().find(|w| w["workunit_id"] == "a").unwrap()["state"], "finished");
    }
}
