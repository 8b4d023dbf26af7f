//! One item of the `requests` array, `{"custom_id": "...", "params": {...}}`, parsed and
//! validated by serde in one pass over its bytes, with the API's error messages.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::MAX_PARAMS_BYTES;
use super::state::State;

/// Lets a visitor report "not the expected kind of value" in the API's words.
macro_rules! reject_other_kinds {
    ($message:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str($message)
        }
    };
}

/// One item: `{"custom_id": "...", "params": {...}}`.
pub(super) struct ItemSeed<'s, 'a> {
    pub(super) state: &'s mut State<'a>,
    pub(super) index: usize,
}

/// An item's `custom_id`, where its `params` are and the address just past the last value
/// of its object (both addresses in the bytes parsed), which tells where the item ends.
pub(super) struct ItemParsed {
    pub(super) custom_id: String,
    pub(super) params: std::ops::Range<usize>,
    pub(super) values_end: usize,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = ItemParsed;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ItemParsed, D::Error> {
        d.deserialize_any(self)
    }
}

/// A key of an item, read without allocating for the two expected ones.
enum ItemKey {
    CustomId,
    Params,
    Other(String),
}

impl<'de> de::Deserialize<'de> for ItemKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ItemKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<ItemKey, E> {
                Ok(match key {
                    "custom_id" => ItemKey::CustomId,
                    "params" => ItemKey::Params,
                    other => ItemKey::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The address just past `raw`'s bytes.
fn end_of(raw: &RawValue) -> usize {
    raw.get().as_ptr() as usize + raw.get().len()
}

impl ItemSeed<'_, '_> {
    fn reject<E: de::Error>(self) -> E {
        let message = format!(
            "requests.{}: Input should be a valid dictionary",
            self.index
        );
        self.state.invalid(message)
    }

    fn custom_id<E: de::Error>(&mut self, raw: &RawValue) -> Result<String, E> {
        let i = self.index;
        let Ok(id) = serde_json::from_str::<String>(raw.get()) else {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: Input should be a valid string"
            )));
        };
        if id.chars().count() > satchel_wire::MAX_CUSTOM_ID_LEN {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should have at most 64 characters"
            )));
        }
        if !satchel_wire::is_valid_custom_id(&id) {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        Ok(id)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_, '_> {
    type Value = ItemParsed;
    reject_other_kinds!("a request object");

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ItemParsed, A::Error> {
        Err(self.reject())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<ItemParsed, A::Error> {
        let i = self.index;
        let mut custom_id = None;
        let mut params: Option<&'de RawValue> = None;
        let mut values_end = 0;
        while let Some(key) = map.next_key::<ItemKey>()? {
            match key {
                ItemKey::CustomId => {
                    let raw: &RawValue = map.next_value()?;
                    values_end = values_end.max(end_of(raw));
                    custom_id = Some(self.custom_id(raw)?);
                }
                ItemKey::Params => {
                    let raw: &'de RawValue = map.next_value()?;
                    values_end = values_end.max(end_of(raw));
                    if !raw.get().starts_with('{') {
                        return Err(self.state.invalid(format!(
                            "requests.{i}.params: Input should be a valid dictionary"
                        )));
                    }
                    if raw.get().len() > MAX_PARAMS_BYTES {
                        let path = format!("requests.{i}.params");
                        return Err(self.state.fail(super::too_large(&path)));
                    }
                    params = Some(raw);
                }
                ItemKey::Other(other) => {
                    let message = format!("requests.{i}.{other}: Extra inputs are not permitted");
                    let _: IgnoredAny = map.next_value()?;
                    return Err(self.state.invalid(message));
                }
            }
        }
        let Some(custom_id) = custom_id else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.custom_id: Field required")));
        };
        let Some(params) = params else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.params: Field required")));
        };
        let start = params.get().as_ptr() as usize;
        Ok(ItemParsed {
            custom_id,
            params: start..start + params.get().len(),
            values_end,
        })
    }
}
