//! docs/configuration.md is generated (`crdgen --docs`) from the CRD the code generates and the
//! chart's values.schema.json and values.yaml; these tests fail when it drifts or misses a field.

use roomrec_operator::docs::{REGENERATE, configuration_md};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn generated() -> String {
    configuration_md(&repo().join("charts/roomrec")).unwrap()
}

#[test]
fn the_committed_configuration_reference_matches_the_crd_and_the_chart() {
    let committed = std::fs::read_to_string(repo().join("docs/configuration.md"))
        .unwrap_or_else(|e| panic!("docs/configuration.md: {e}; create it with `{REGENERATE}`"));
    let generated = generated();
    if committed != generated {
        let (line, (old, new)) = committed
            .lines()
            .chain(std::iter::repeat(""))
            .zip(generated.lines().chain(std::iter::repeat("")))
            .enumerate()
            .find(|(_, (old, new))| old != new)
            .unwrap_or((0, ("", "")));
        panic!(
            "docs/configuration.md is stale: run `{REGENERATE}`\n\
             first difference, line {}:\n  committed: {old}\n  generated: {new}",
            line + 1
        );
    }
}

/// The table rows' first cells: `spec.mode`, `operator.replicas`, …
fn documented(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(path, _)| path.to_string())
        .collect()
}

/// Dotted paths of every value values.yaml sets (maps are followed; an empty map or a list is
/// one value).
fn leaves(value: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        serde_yaml::Value::Mapping(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(child, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_chart_value_and_every_validation_message_is_documented() {
    let text = generated();
    let rows = documented(&text);
    let values: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("charts/roomrec/values.yaml")).unwrap(),
    )
    .unwrap();
    let mut paths = Vec::new();
    leaves(&values, "", &mut paths);
    // A value is listed itself, or under a free-form map the page lists without children
    // (`dashboard.labels.grafana_dashboard` under `dashboard.labels`).
    let free_form = |row: &String| !rows.iter().any(|r| r.starts_with(&format!("{row}.")));
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| {
            !rows
                .iter()
                .any(|r| r == *p || (p.starts_with(&format!("{r}.")) && free_form(r)))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values.yaml sets values that docs/configuration.md does not list (add them to values.schema.json): {missing:?}"
    );

    let crd = roomrec_api::crdgen::crd_value();
    let mut messages = Vec::new();
    collect_messages(
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"],
        &mut messages,
    );
    assert!(messages.len() > 20, "{messages:?}");
    for message in messages {
        assert!(
            text.contains(&message.replace('|', "\\|")),
            "the validation message {message:?} is not in docs/configuration.md"
        );
    }
}

fn collect_messages(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for rule in map
                .get("x-kubernetes-validations")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                out.push(rule["message"].as_str().unwrap().to_string());
            }
            map.values().for_each(|v| collect_messages(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}

/// The chart half follows JSON Schema draft-07 as Helm reads it: `$ref`s into `definitions`,
/// types given as lists, enums, items, maps, and defaults from values.yaml in its order.
#[test]
fn chart_values_are_read_as_json_schema_with_defaults_from_values_yaml() {
    let chart = tempfile::tempdir().unwrap();
    std::fs::write(
        chart.path().join("values.schema.json"),
        r##"{
          "$schema": "http://json-schema.org/draft-07/schema#",
          "type": "object",
          "additionalProperties": false,
          "definitions": {
            "image": {"type": "object", "description": "An image.",
                      "properties": {"repository": {"type": "string", "description": "Where | from."},
                                     "tag": {"type": "string"}}}
          },
          "properties": {
            "zeta": {"type": "integer", "minimum": 1, "description": "Last in the schema,\nfirst in values.yaml."},
            "image": {"$ref": "#/definitions/image", "description": "The <operator> image."},
            "format": {"type": "string", "enum": ["json", "text"], "default": "json"},
            "env": {"type": "object", "additionalProperties": {"type": "string"}},
            "secrets": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
            "port": {"type": ["integer", "string"]}
          }
        }"##,
    )
    .unwrap();
    std::fs::write(
        chart.path().join("values.yaml"),
        "zeta: 3\nimage:\n  repository: ghcr.io/x/y\n  tag: \"\"\nenv: {A: b}\nsecrets: []\nport: 80\n",
    )
    .unwrap();
    let text = configuration_md(chart.path()).unwrap();
    let chart_rows: Vec<&str> = text
        .split("## Helm chart values")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert_eq!(
        chart_rows,
        [
            "| `zeta` | integer, ≥ 1 | `3` | Last in the schema, first in values.yaml. |",
            "| `image` | object |  | The &lt;operator&gt; image. |",
            "| `image.repository` | string | `ghcr.io/x/y` | Where \\| from. |",
            "| `image.tag` | string | `\"\"` |  |",
            "| `env` | map[string]string | `{\"A\":\"b\"}` |  |",
            "| `secrets` | []object | `[]` |  |",
            "| `secrets[].name` | string |  |  |",
            "| `port` | integer or string | `80` |  |",
            "| `format` | string, one of `json`, `text` | `json` |  |",
        ]
    );
}
