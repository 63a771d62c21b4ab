//! Just enough JSON to read what `etcdctl -w json` prints. Numbers keep their text:
//! member and cluster ids are 64-bit and do not survive a trip through `f64`.
//!
//! The workspace has serde_json, but the test crate does not depend on it; the shapes
//! read here are few, small and fixed, which did not seem worth a new dependency.

/// A parsed JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// The number as written.
    Number(String),
    String(String),
    Array(Vec<Json>),
    /// Fields in the order written.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// Parses `text`, which must hold exactly one value (whitespace around it is fine).
    pub fn parse(text: &str) -> Json {
        let mut parser = Parser {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        let value = parser.value();
        parser.skip_space();
        assert_eq!(parser.at, text.len(), "text after the JSON value: {text}");
        value
    }

    /// The field `key` of an object, if present (etcdctl omits false and zero fields).
    pub fn field(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            other => panic!("field {key:?} of a non-object: {other:?}"),
        }
    }

    /// The field `key`, which must be present.
    #[track_caller]
    pub fn at(&self, key: &str) -> &Json {
        self.field(key)
            .unwrap_or_else(|| panic!("no field {key:?} in {self:?}"))
    }

    /// An unsigned integer.
    #[track_caller]
    pub fn u64(&self) -> u64 {
        match self {
            Json::Number(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("not an unsigned integer: {text}")),
            other => panic!("not a number: {other:?}"),
        }
    }

    /// A string.
    #[track_caller]
    pub fn str(&self) -> &str {
        match self {
            Json::String(text) => text,
            other => panic!("not a string: {other:?}"),
        }
    }

    /// A boolean.
    #[track_caller]
    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(value) => *value,
            other => panic!("not a boolean: {other:?}"),
        }
    }

    /// The elements of an array.
    #[track_caller]
    pub fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// An array of strings.
    #[track_caller]
    pub fn strings(&self) -> Vec<String> {
        self.array().iter().map(|s| s.str().to_string()).collect()
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.skip_space();
        *self
            .bytes
            .get(self.at)
            .unwrap_or_else(|| panic!("JSON ends early at byte {}", self.at))
    }

    fn expect(&mut self, byte: u8) {
        let found = self.peek();
        assert_eq!(
            found as char, byte as char,
            "JSON: unexpected byte at {}",
            self.at
        );
        self.at += 1;
    }

    fn literal(&mut self, word: &str, value: Json) -> Json {
        assert!(
            self.bytes[self.at..].starts_with(word.as_bytes()),
            "JSON: bad literal at byte {}",
            self.at
        );
        self.at += word.len();
        value
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => {
                self.at += 1;
                let mut fields = Vec::new();
                if self.peek() == b'}' {
                    self.at += 1;
                    return Json::Object(fields);
                }
                loop {
                    let key = self.string();
                    self.expect(b':');
                    fields.push((key, self.value()));
                    match self.peek() {
                        b',' => self.at += 1,
                        _ => break,
                    }
                }
                self.expect(b'}');
                Json::Object(fields)
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.peek() == b']' {
                    self.at += 1;
                    return Json::Array(items);
                }
                loop {
                    items.push(self.value());
                    match self.peek() {
                        b',' => self.at += 1,
                        _ => break,
                    }
                }
                self.expect(b']');
                Json::Array(items)
            }
            b'"' => Json::String(self.string()),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            _ => {
                let start = self.at;
                while self
                    .bytes
                    .get(self.at)
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                {
                    self.at += 1;
                }
                assert!(self.at > start, "JSON: no value at byte {start}");
                let text = std::str::from_utf8(&self.bytes[start..self.at]).expect("ASCII");
                Json::Number(text.to_string())
            }
        }
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut text = String::new();
        loop {
            let c = self.text[self.at..]
                .chars()
                .next()
                .expect("JSON string ends early");
            self.at += c.len_utf8();
            match c {
                '"' => return text,
                '\\' => {
                    let escape = self.bytes[self.at];
                    self.at += 1;
                    text.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = std::str::from_utf8(&self.bytes[self.at..self.at + 4])
                                .expect("ASCII");
                            self.at += 4;
                            let code = u32::from_str_radix(hex, 16).expect("\\u escape");
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        other => panic!("JSON: bad escape \\{}", other as char),
                    });
                }
                c => text.push(c),
            }
        }
    }
}

#[test]
fn parses_what_etcdctl_prints() {
    let json = Json::parse(
        r#" {"header":{"cluster_id":17495100640981928781},"members":[{"ID":1,"name":"m\"1\u0041","peerURLs":["http://a:1"],"isLearner":true},{}], "x": [null, false, -1.5e3]} "#,
    );
    assert_eq!(
        json.at("header").at("cluster_id").u64(),
        17_495_100_640_981_928_781
    );
    let members = json.at("members").array();
    assert_eq!(members[0].at("name").str(), "m\"1A");
    assert_eq!(members[0].at("peerURLs").strings(), vec!["http://a:1"]);
    assert!(members[0].at("isLearner").bool());
    assert!(members[1].field("isLearner").is_none());
    assert_eq!(
        json.at("x").array(),
        &[Json::Null, Json::Bool(false), Json::Number("-1.5e3".into())]
    );
}
