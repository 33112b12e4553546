//! One view of JSON values for the core, over two backends: `serde_json::Value` on the host (so
//! the core is tested natively) and JS values in wasm (so the module carries no JSON parser or
//! serializer of its own: the browser's `JSON` does that work, and the wasm stays small).

/// The JSON value type of this build.
#[cfg(not(target_arch = "wasm32"))]
pub type JsonValue = serde_json::Value;
/// The JSON value type of this build.
#[cfg(target_arch = "wasm32")]
pub type JsonValue = wasm_bindgen::JsValue;

/// Reading and building JSON values.
pub trait Json: Sized + Clone {
    /// `null`.
    fn null() -> Self;
    /// A string.
    fn string(text: &str) -> Self;
    /// A number.
    fn number(n: f64) -> Self;
    /// A boolean.
    fn boolean(flag: bool) -> Self;
    /// An array.
    fn array(items: Vec<Self>) -> Self;
    /// An object with these entries, in order.
    fn object(entries: Vec<(&'static str, Self)>) -> Self;
    /// Parses JSON text; `None` when it is not JSON.
    fn parse(text: &str) -> Option<Self>;
    /// JSON text; `None` for what JSON cannot hold (a BigInt, a cycle).
    fn stringify(&self) -> Option<String>;
    /// `null`, or absent (`undefined` in JS): what `JSON.stringify` leaves out of an object.
    /// Named apart from `JsValue::is_null`, which would shadow it and miss `undefined`.
    fn is_absent(&self) -> bool;
    /// A plain object (not an array, not a function). Named apart from `JsValue::is_object`,
    /// which is also true of arrays.
    fn is_plain_object(&self) -> bool;
    /// The member `key` of an object; `null` when absent or not an object.
    fn member(&self, key: &'static str) -> Self;
    /// The object's own enumerable entries, in order; `None` when it is not an object or a
    /// getter threw.
    fn entries(&self) -> Option<Vec<(String, Self)>>;
    /// The elements, when it is an array.
    fn items(&self) -> Option<Vec<Self>>;
    /// The string, when it is one.
    fn as_str(&self) -> Option<String>;
    /// The number, when it is one.
    fn as_f64(&self) -> Option<f64>;
    /// The boolean, when it is one.
    fn as_bool(&self) -> Option<bool>;

    /// A member that is present and not null.
    fn field(&self, key: &'static str) -> Option<Self> {
        Some(self.member(key)).filter(|value| !value.is_absent())
    }

    /// A short rendering for messages.
    fn brief(&self) -> String {
        let text = self
            .stringify()
            .unwrap_or_else(|| "a value JSON cannot hold".to_owned());
        const LIMIT: usize = 60;
        match text.char_indices().nth(LIMIT) {
            Some(_) => text.chars().take(LIMIT).chain(['…']).collect(),
            None => text,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Json for serde_json::Value {
    fn null() -> Self {
        serde_json::Value::Null
    }
    fn string(text: &str) -> Self {
        serde_json::Value::String(text.to_owned())
    }
    fn number(n: f64) -> Self {
        // Integral numbers stay integers, as JSON.stringify would print them.
        if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
            serde_json::Value::from(n as i64)
        } else {
            serde_json::Value::from(n)
        }
    }
    fn boolean(flag: bool) -> Self {
        serde_json::Value::Bool(flag)
    }
    fn array(items: Vec<Self>) -> Self {
        serde_json::Value::Array(items)
    }
    fn object(entries: Vec<(&'static str, Self)>) -> Self {
        serde_json::Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        )
    }
    fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
    fn stringify(&self) -> Option<String> {
        Some(self.to_string())
    }
    fn is_absent(&self) -> bool {
        self.is_null()
    }
    fn is_plain_object(&self) -> bool {
        self.is_object()
    }
    fn member(&self, key: &'static str) -> Self {
        self.as_object()
            .and_then(|map| map.get(key))
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    }
    fn entries(&self) -> Option<Vec<(String, Self)>> {
        self.as_object()
            .map(|map| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
    fn items(&self) -> Option<Vec<Self>> {
        self.as_array().cloned()
    }
    fn as_str(&self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }
    fn as_f64(&self) -> Option<f64> {
        self.as_f64()
    }
    fn as_bool(&self) -> Option<bool> {
        self.as_bool()
    }
}

#[cfg(target_arch = "wasm32")]
impl Json for wasm_bindgen::JsValue {
    fn null() -> Self {
        wasm_bindgen::JsValue::NULL
    }
    fn string(text: &str) -> Self {
        text.into()
    }
    fn number(n: f64) -> Self {
        n.into()
    }
    fn boolean(flag: bool) -> Self {
        flag.into()
    }
    fn array(items: Vec<Self>) -> Self {
        items.into_iter().collect::<js_sys::Array>().into()
    }
    fn object(entries: Vec<(&'static str, Self)>) -> Self {
        let object = js_sys::Object::new();
        for (key, value) in entries {
            // Setting a property on a fresh plain object cannot fail.
            let _ = js_sys::Reflect::set(&object, &js_key(key), &value);
        }
        object.into()
    }
    fn parse(text: &str) -> Option<Self> {
        js_sys::JSON::parse(text).ok()
    }
    fn stringify(&self) -> Option<String> {
        js_sys::JSON::stringify(self)
            .ok()
            .and_then(|text| text.as_string())
    }
    fn is_absent(&self) -> bool {
        self.is_null() || self.is_undefined()
    }
    fn is_plain_object(&self) -> bool {
        self.is_object() && !js_sys::Array::is_array(self)
    }
    fn member(&self, key: &'static str) -> Self {
        if self.is_object() {
            js_sys::Reflect::get(self, &js_key(key)).unwrap_or(wasm_bindgen::JsValue::UNDEFINED)
        } else {
            wasm_bindgen::JsValue::UNDEFINED
        }
    }
    fn entries(&self) -> Option<Vec<(String, Self)>> {
        use wasm_bindgen::JsCast;
        if !self.is_object() {
            return None;
        }
        let mut entries = Vec::new();
        for entry in object_entries(self).ok()?.iter() {
            let entry: js_sys::Array = entry.unchecked_into();
            if let Some(key) = entry.get(0).as_string() {
                entries.push((key, entry.get(1)));
            }
        }
        Some(entries)
    }
    fn items(&self) -> Option<Vec<Self>> {
        js_sys::Array::is_array(self).then(|| js_sys::Array::from(self).iter().collect())
    }
    fn as_str(&self) -> Option<String> {
        self.as_string()
    }
    fn as_f64(&self) -> Option<f64> {
        self.as_f64()
    }
    fn as_bool(&self) -> Option<bool> {
        self.as_bool()
    }
}

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// `Object.entries`, which runs getters: one that throws is an error, not a trap.
    #[wasm_bindgen(js_namespace = Object, js_name = entries, catch)]
    fn object_entries(
        object: &wasm_bindgen::JsValue,
    ) -> Result<js_sys::Array, wasm_bindgen::JsValue>;
}

/// The JS string for a property name written in the code, made once per name: decoding a Rust
/// string into a JS one costs more than the property access it is made for, and a run's
/// normalisation names some fifty properties.
#[cfg(target_arch = "wasm32")]
pub fn js_key(name: &'static str) -> wasm_bindgen::JsValue {
    use std::cell::RefCell;
    thread_local! {
        // A static string's address and length name it: a few dozen entries, searched in order.
        static KEYS: RefCell<Vec<(usize, usize, wasm_bindgen::JsValue)>> = const { RefCell::new(Vec::new()) };
    }
    let id = (name.as_ptr() as usize, name.len());
    KEYS.with_borrow_mut(|keys| {
        if let Some((.., key)) = keys.iter().find(|(at, len, _)| (*at, *len) == id) {
            return key.clone();
        }
        let key = wasm_bindgen::JsValue::from_str(name);
        keys.push((id.0, id.1, key.clone()));
        key
    })
}
