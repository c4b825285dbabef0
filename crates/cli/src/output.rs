//! How results are shown: aligned tables and short sentences for people, JSON for scripts.

use serde_json::Value;

/// Columns aligned on the widest cell, two spaces apart; the last column is not padded.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `value[key]` as display text: strings unquoted, everything else as JSON.
pub(crate) fn field(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A table of the objects in `list`, one column per `(header, key)`.
pub(crate) fn object_table(list: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|item| columns.iter().map(|(_, key)| field(item, key)).collect())
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    table(&headers, &rows)
}

/// Columns of `p2pnet ls`.
pub(crate) const LISTENER_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("DIRECTION", "direction"),
    ("PROTOCOL", "protocol"),
    ("LISTEN", "listen_addr"),
    ("TARGET", "target_addr"),
];

/// Columns of `p2pnet streams`.
pub(crate) const STREAM_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("PROTOCOL", "protocol"),
    ("ORIGIN", "origin"),
    ("LOCAL", "local_addr"),
    ("PEER", "peer_id"),
    ("BYTES IN", "bytes_in"),
    ("BYTES OUT", "bytes_out"),
];

/// Columns of `p2pnet peers`.
pub(crate) const PEER_COLUMNS: &[(&str, &str)] = &[
    ("PEER", "peer_id"),
    ("ADDRESS", "addr"),
    ("DIRECTION", "direction"),
    ("TRANSPORT", "transport"),
    ("SESSION", "session"),
];

pub(crate) const DHT_TABLE_COLUMNS: &[(&str, &str)] = &[
    ("BUCKET", "bucket"),
    ("PEER", "peer_id"),
    ("ADDRESSES", "addrs"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "PROTOCOL", "TARGET"],
            &[
                vec!["l1".into(), "/x/echo".into(), "/ip4/127.0.0.1/tcp/7".into()],
                vec!["l10".into(), "/x/a".into(), "x".into()],
            ],
        );
        assert_eq!(
            t,
            "ID   PROTOCOL  TARGET\n\
             l1   /x/echo   /ip4/127.0.0.1/tcp/7\n\
             l10  /x/a      x\n"
        );
        let list = serde_json::json!([{ "id": "l1", "n": 3 }]);
        assert_eq!(
            object_table(&list, &[("ID", "id"), ("N", "n")]),
            "ID  N\nl1  3\n"
        );
    }
}
