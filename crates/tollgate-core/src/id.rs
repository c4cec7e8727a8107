//! [`Id`]: an identifier shared, not copied, by the inputs, the state and the outputs.
//!
//! A leg's id, call id, meeting id and organizer id travel from its `started` event into its
//! open leg, its decision, its dedup entry and its usage record. Held as [`Id`], each of those
//! is a reference count on the one allocation the wire edge made, so rating a leg allocates
//! nothing for them. The pointer is thin (8 bytes: the length is kept in the allocation, next
//! to the text), so the events, open legs and outputs that hold several ids are smaller to
//! move and to keep in tables.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use arcstr::ArcStr;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An immutable string id; cloning it is a reference-count increment. Compares, hashes,
/// orders, prints and serializes as the string it holds.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Id(ArcStr);

impl Id {
    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Id {
    /// The empty id: arcstr's static empty text, never allocated and shared by every empty
    /// id (its clones and drops touch no reference count).
    fn default() -> Self {
        Id(ArcStr::new())
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for Id {
    fn from(value: &str) -> Self {
        Id(ArcStr::from(value))
    }
}

impl From<String> for Id {
    fn from(value: String) -> Self {
        Id(ArcStr::from(value.as_str()))
    }
}

impl From<Id> for String {
    fn from(value: Id) -> Self {
        value.0.as_str().to_owned()
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<Id> for str {
    fn eq(&self, other: &Id) -> bool {
        *self == *other.0
    }
}

impl PartialEq<Id> for &str {
    fn eq(&self, other: &Id) -> bool {
        **self == *other.0
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Copies the text straight into the shared allocation (no intermediate `String`).
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string id")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Id, E> {
                Ok(Id::from(value))
            }
            fn visit_string<E: serde::de::Error>(self, value: String) -> Result<Id, E> {
                Ok(Id::from(value))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_its_string_everywhere_it_shows() {
        let id = Id::from("leg-1");
        assert_eq!(id, "leg-1");
        assert_eq!(id.as_str(), "leg-1");
        assert_eq!((id.to_string(), format!("{id:?}")), ("leg-1".to_owned(), "\"leg-1\"".to_owned()));
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"leg-1\"");
        assert_eq!(serde_json::from_str::<Id>("\"leg-1\"").unwrap(), id);
        let mut ids = [Id::from("b"), Id::from("a")];
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn an_id_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Id>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn a_clone_shares_the_allocation() {
        let id = Id::from(String::from("call-7"));
        let copy = id.clone();
        assert!(std::ptr::eq(id.as_str(), copy.as_str()));
        assert!(std::ptr::eq(Id::default().as_str(), Id::default().as_str()));
        assert_eq!(Id::default(), "");
    }

    #[test]
    fn maps_keyed_by_id_are_looked_up_by_str() {
        let map: std::collections::HashMap<Id, u8> = [(Id::from("x"), 1)].into_iter().collect();
        assert_eq!(map.get("x"), Some(&1));
    }
}
