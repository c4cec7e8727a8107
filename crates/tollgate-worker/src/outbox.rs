//! The records a batch produces, their keys and values packed into one growing buffer: no
//! allocation per record (a batch's buffer grows a few times, then holds them all).

use std::ops::Range;

use crate::config::TopicKind;

/// Records to produce, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    records: Vec<Packed>,
}

#[derive(Debug)]
struct Packed {
    kind: TopicKind,
    key: Range<usize>,
    /// `None`: a tombstone.
    value: Option<Range<usize>>,
    /// Explicit partition (changelog); `None` lets the murmur2 partitioner pick by key.
    partition: Option<i32>,
}

/// One record of an [`Outbox`], borrowed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct OutRecord<'a> {
    /// Its topic.
    pub kind: TopicKind,
    /// Its key.
    pub key: &'a [u8],
    /// Its value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Its partition, when not the key's.
    pub partition: Option<i32>,
}

impl Outbox {
    /// Appends a record that `write` encodes: it appends the key, then the value, to the
    /// buffer it is given, and returns the record's topic and the key's length.
    pub fn push_encoded(&mut self, partition: Option<i32>, write: impl FnOnce(&mut Vec<u8>) -> (TopicKind, usize)) {
        let start = self.bytes.len();
        let (kind, key_len) = write(&mut self.bytes);
        let key = start..start + key_len;
        let value = Some(key.end..self.bytes.len());
        self.records.push(Packed { kind, key, value, partition });
    }

    /// Appends a record with the given key and value (`None`: a tombstone).
    pub fn push(&mut self, kind: TopicKind, partition: Option<i32>, key: &[u8], value: Option<&[u8]>) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let key = start..self.bytes.len();
        let value = value.map(|value| {
            self.bytes.extend_from_slice(value);
            key.end..self.bytes.len()
        });
        self.records.push(Packed { kind, key, value, partition });
    }

    /// The records, in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = OutRecord<'_>> {
        self.records.iter().map(|r| OutRecord {
            kind: r.kind,
            key: &self.bytes[r.key.clone()],
            value: r.value.clone().map(|v| &self.bytes[v]),
            partition: r.partition,
        })
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Empties it, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_back_each_record_as_pushed() {
        let mut outbox = Outbox::default();
        outbox.push(TopicKind::RatedUsage, None, b"acme", Some(b"usage"));
        outbox.push(TopicKind::State, Some(3), b"t/acme", None);
        outbox.push_encoded(None, |buf| {
            buf.extend_from_slice(b"initech");
            (TopicKind::LegDecisions, 7)
        });
        let records: Vec<OutRecord<'_>> = outbox.iter().collect();
        assert_eq!(
            records,
            vec![
                OutRecord { kind: TopicKind::RatedUsage, key: b"acme", value: Some(b"usage"), partition: None },
                OutRecord { kind: TopicKind::State, key: b"t/acme", value: None, partition: Some(3) },
                OutRecord { kind: TopicKind::LegDecisions, key: b"initech", value: Some(b""), partition: None },
            ]
        );
        outbox.clear();
        assert!(outbox.is_empty());
    }
}
