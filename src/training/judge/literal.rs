//! Python literals as data: what `ast.literal_eval` accepts (None, booleans, ints of any size,
//! floats, strings and bytes with every prefix and escape, tuples, lists, dicts, sets, `set()`,
//! `...`, a sign on a number), compared with Python's `==`. Nothing is ever executed: a
//! prediction that is not a literal is simply not equal to anything.
//!
//! Not accepted (rare in answers, and refused rather than guessed): complex numbers, `\N{name}`
//! escapes and lone surrogates.

use std::fmt::Write;

/// A parsed Python literal.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Ellipsis,
    Bool(bool),
    /// Any size: the sign and the decimal digits without leading zeros (`0` is not negative).
    Int { negative: bool, digits: String },
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Keys are unique under `==` (a later equal key replaces the value, as in Python).
    Dict(Vec<(Value, Value)>),
    /// Elements are unique under `==`.
    Set(Vec<Value>),
}

/// Why a text is not a literal (the position is in characters).
#[derive(Debug, Clone, PartialEq)]
pub struct NotALiteral {
    pub at: usize,
    pub reason: String,
}

impl std::fmt::Display for NotALiteral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not a Python literal at character {}: {}", self.at, self.reason)
    }
}

/// One literal expression, as `ast.literal_eval(text)` reads it (`1, 2` is a tuple).
pub fn parse(text: &str) -> Result<Value, NotALiteral> {
    let mut p = Parser::new(text);
    p.skip_leading();
    let v = p.expression_list()?;
    p.end()?;
    Ok(v)
}

/// A call's arguments, each a literal.
#[derive(Debug, Clone)]
pub struct CallArguments {
    pub positional: Vec<Value>,
    pub keywords: Vec<(String, Value)>,
}

/// The arguments of a call after its `(`: literals separated by commas (keywords allowed as
/// `name=literal`), then `)` and nothing but spaces or a comment.
pub fn parse_call_arguments(text: &str) -> Result<CallArguments, NotALiteral> {
    let mut p = Parser::new(text);
    p.depth = 1; // inside the call's parentheses
    let (mut args, mut kwargs) = (vec![], vec![]);
    loop {
        p.ws()?;
        if p.eat(')') {
            break;
        }
        if let Some(name) = p.keyword_name() {
            kwargs.push((name, p.expression()?));
        } else if kwargs.is_empty() {
            args.push(p.expression()?);
        } else {
            return Err(p.error("positional argument after a keyword argument"));
        }
        p.ws()?;
        if p.eat(')') {
            break;
        }
        p.expect(',')?;
    }
    p.depth = 0;
    p.end()?;
    Ok(CallArguments { positional: args, keywords: kwargs })
}

impl Value {
    /// Python's `a == b` for two literals.
    pub fn py_eq(&self, other: &Value) -> bool {
        use Value::*;
        if let (Some(a), Some(b)) = (self.number(), other.number()) {
            return numbers_equal(&a, &b);
        }
        match (self, other) {
            (None, None) | (Ellipsis, Ellipsis) => true,
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (List(a), List(b)) | (Tuple(a), Tuple(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.py_eq(y)),
            (Dict(a), Dict(b)) => a.len() == b.len() && a.iter().all(|(k, v)| b.iter().any(|(k2, v2)| k.py_eq(k2) && v.py_eq(v2))),
            (Set(a), Set(b)) => a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| x.py_eq(y))),
            _ => false,
        }
    }

    /// Python source that evaluates to this value (strings and bytes fully escaped to ASCII).
    pub fn to_python(&self) -> String {
        let mut s = String::new();
        self.write_python(&mut s);
        s
    }

    fn write_python(&self, s: &mut String) {
        let seq = |s: &mut String, items: &[Value], open: &str, close: &str| {
            s.push_str(open);
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                v.write_python(s);
            }
            s.push_str(close);
        };
        match self {
            Value::None => s.push_str("None"),
            Value::Ellipsis => s.push_str("..."),
            Value::Bool(b) => s.push_str(if *b { "True" } else { "False" }),
            Value::Int { negative, digits } => {
                if *negative {
                    s.push('-');
                }
                s.push_str(digits);
            }
            // 1e999 is Python's spelling of an infinite literal; `{:?}` round-trips otherwise.
            Value::Float(f) if f.is_infinite() => s.push_str(if *f > 0.0 { "1e999" } else { "-1e999" }),
            Value::Float(f) => {
                let _ = write!(s, "{f:?}");
            }
            Value::Str(text) => {
                s.push('\'');
                for c in text.chars() {
                    match c {
                        '\\' | '\'' => {
                            s.push('\\');
                            s.push(c);
                        }
                        ' '..='~' => s.push(c),
                        c if (c as u32) < 0x100 => {
                            let _ = write!(s, "\\x{:02x}", c as u32);
                        }
                        c if (c as u32) < 0x10000 => {
                            let _ = write!(s, "\\u{:04x}", c as u32);
                        }
                        c => {
                            let _ = write!(s, "\\U{:08x}", c as u32);
                        }
                    }
                }
                s.push('\'');
            }
            Value::Bytes(b) => {
                s.push_str("b'");
                for &c in b {
                    match c {
                        b'\\' | b'\'' => {
                            s.push('\\');
                            s.push(c as char);
                        }
                        b' '..=b'~' => s.push(c as char),
                        c => {
                            let _ = write!(s, "\\x{c:02x}");
                        }
                    }
                }
                s.push('\'');
            }
            Value::List(v) => seq(s, v, "[", "]"),
            Value::Tuple(v) if v.len() == 1 => seq(s, v, "(", ",)"),
            Value::Tuple(v) => seq(s, v, "(", ")"),
            Value::Set(v) if v.is_empty() => s.push_str("set()"),
            Value::Set(v) => seq(s, v, "{", "}"),
            Value::Dict(items) => {
                s.push('{');
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    k.write_python(s);
                    s.push_str(": ");
                    v.write_python(s);
                }
                s.push('}');
            }
        }
    }

    fn number(&self) -> Option<Number<'_>> {
        match self {
            Value::Bool(b) => Some(Number::Int(false, if *b { "1" } else { "0" })),
            Value::Int { negative, digits } => Some(Number::Int(*negative, digits)),
            Value::Float(f) => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// Whether Python could hash it (a dict key or set element).
    fn hashable(&self) -> bool {
        match self {
            Value::List(_) | Value::Dict(_) | Value::Set(_) => false,
            Value::Tuple(v) => v.iter().all(Value::hashable),
            _ => true,
        }
    }
}

enum Number<'a> {
    Int(bool, &'a str),
    Float(f64),
}

/// Python compares an int and a float exactly (no rounding of the int).
fn numbers_equal(a: &Number, b: &Number) -> bool {
    match (a, b) {
        (Number::Int(n1, d1), Number::Int(n2, d2)) => n1 == n2 && d1 == d2,
        (Number::Float(x), Number::Float(y)) => x == y,
        (Number::Int(n, d), Number::Float(f)) | (Number::Float(f), Number::Int(n, d)) => {
            if !f.is_finite() || f.fract() != 0.0 {
                return false;
            }
            // An integral f64 printed with no fraction digits is exact.
            let exact = format!("{:.0}", f.abs());
            let negative = *f < 0.0 && exact != "0";
            negative == *n && exact == *d
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Bracket nesting: newlines separate nothing inside brackets, and end the text outside.
    depth: usize,
}

impl Parser {
    fn new(text: &str) -> Self {
        Parser { chars: text.chars().collect(), pos: 0, depth: 0 }
    }

    fn error(&self, reason: impl Into<String>) -> NotALiteral {
        NotALiteral { at: self.pos, reason: reason.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, k: usize) -> Option<char> {
        self.chars.get(self.pos + k).copied()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<(), NotALiteral> {
        self.ws()?;
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(format!("expected `{c}`")))
        }
    }

    /// Leading spaces and tabs (literal_eval strips them) and blank lines.
    fn skip_leading(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r' | '\x0c')) {
            self.pos += 1;
        }
    }

    /// Spaces, comments, and newlines inside brackets or after a backslash. A newline outside
    /// brackets ends the expression: only more blank space may follow it.
    fn ws(&mut self) -> Result<(), NotALiteral> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\x0c') => self.pos += 1,
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.pos += 1;
                    }
                }
                Some('\\') if matches!(self.peek_at(1), Some('\n')) => self.pos += 2,
                Some('\\') if matches!((self.peek_at(1), self.peek_at(2)), (Some('\r'), Some('\n'))) => self.pos += 3,
                Some('\n' | '\r') if self.depth > 0 => self.pos += 1,
                _ => return Ok(()),
            }
        }
    }

    fn end(&mut self) -> Result<(), NotALiteral> {
        self.ws()?;
        while let Some(c) = self.peek() {
            match c {
                '\n' | '\r' | ' ' | '\t' | '\x0c' => self.pos += 1,
                '#' => self.ws()?,
                _ => return Err(self.error(format!("unexpected `{c}`"))),
            }
        }
        Ok(())
    }

    /// `a, b, c` at the top level is a tuple; one item without a comma is itself.
    fn expression_list(&mut self) -> Result<Value, NotALiteral> {
        let first = self.expression()?;
        self.ws()?;
        if self.peek() != Some(',') {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(',') {
            self.ws()?;
            if self.at_expression_end() {
                break;
            }
            items.push(self.expression()?);
            self.ws()?;
        }
        Ok(Value::Tuple(items))
    }

    fn at_expression_end(&self) -> bool {
        matches!(self.peek(), None | Some('\n' | '\r' | ')' | ']' | '}' | '#'))
    }

    /// A name followed by `=` (not `==`), for keyword arguments.
    fn keyword_name(&mut self) -> Option<String> {
        let start = self.pos;
        let name = self.identifier();
        let _ = self.ws();
        let starts_ok = name.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
        if starts_ok && self.peek() == Some('=') && self.peek_at(1) != Some('=') && !matches!(name.as_str(), "True" | "False" | "None") {
            self.pos += 1;
            return Some(name);
        }
        self.pos = start;
        None
    }

    fn identifier(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '_' || c.is_alphanumeric() {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    fn expression(&mut self) -> Result<Value, NotALiteral> {
        self.ws()?;
        let start = self.pos;
        let Some(c) = self.peek() else { return Err(self.error("expected a value")) };
        match c {
            '(' => self.bracketed('(', ')'),
            '[' => self.bracketed('[', ']'),
            '{' => self.bracketed('{', '}'),
            '-' | '+' => {
                self.pos += 1;
                self.ws()?;
                // literal_eval allows one sign on an int or float, not on a bool or a second sign.
                match self.number()? {
                    Value::Int { negative, digits } => Ok(Value::Int { negative: (c == '-') != negative && digits != "0", digits }),
                    Value::Float(f) => Ok(Value::Float(if c == '-' { -f } else { f })),
                    _ => Err(NotALiteral { at: start, reason: "a sign applies only to a number".into() }),
                }
            }
            '.' if self.peek_at(1) == Some('.') && self.peek_at(2) == Some('.') => {
                self.pos += 3;
                Ok(Value::Ellipsis)
            }
            c if c.is_ascii_digit() || c == '.' => self.number(),
            c if c == '\'' || c == '"' => self.strings(),
            c if c.is_alphabetic() || c == '_' => {
                if self.string_prefix().is_some() {
                    return self.strings();
                }
                let name = self.identifier();
                match name.as_str() {
                    "None" => Ok(Value::None),
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "set" => {
                        self.ws()?;
                        if self.eat('(') {
                            self.depth += 1;
                            self.ws()?;
                            let closed = self.eat(')');
                            self.depth -= 1;
                            if closed {
                                return Ok(Value::Set(vec![]));
                            }
                        }
                        Err(NotALiteral { at: start, reason: "only `set()` is a literal call".into() })
                    }
                    _ => Err(NotALiteral { at: start, reason: format!("`{name}` is a name, not a literal") }),
                }
            }
            c => Err(self.error(format!("unexpected `{c}`"))),
        }
    }

    fn bracketed(&mut self, open: char, close: char) -> Result<Value, NotALiteral> {
        self.pos += 1;
        self.depth += 1;
        self.ws()?;
        let v = if self.eat(close) {
            match open {
                '(' => Value::Tuple(vec![]),
                '[' => Value::List(vec![]),
                _ => Value::Dict(vec![]),
            }
        } else {
            let first = self.expression()?;
            self.ws()?;
            if open == '{' && self.eat(':') {
                let value = self.expression()?;
                let mut items = vec![];
                self.dict_insert(&mut items, first, value)?;
                self.ws()?;
                while self.eat(',') {
                    self.ws()?;
                    if self.peek() == Some('}') {
                        break;
                    }
                    let k = self.expression()?;
                    self.expect(':')?;
                    let v = self.expression()?;
                    self.dict_insert(&mut items, k, v)?;
                    self.ws()?;
                }
                self.expect('}')?;
                self.depth -= 1;
                return Ok(Value::Dict(items));
            }
            let mut items = vec![first];
            let mut comma = false;
            while self.eat(',') {
                comma = true;
                self.ws()?;
                if self.peek() == Some(close) {
                    break;
                }
                items.push(self.expression()?);
                self.ws()?;
            }
            self.expect(close)?;
            match open {
                '(' if !comma => items.pop().expect("one item"),
                '(' => Value::Tuple(items),
                '[' => Value::List(items),
                _ => {
                    let mut set: Vec<Value> = vec![];
                    for v in items {
                        if !v.hashable() {
                            return Err(self.error("unhashable set element"));
                        }
                        if !set.iter().any(|x| x.py_eq(&v)) {
                            set.push(v);
                        }
                    }
                    Value::Set(set)
                }
            }
        };
        self.depth -= 1;
        Ok(v)
    }

    fn dict_insert(&self, items: &mut Vec<(Value, Value)>, k: Value, v: Value) -> Result<(), NotALiteral> {
        if !k.hashable() {
            return Err(self.error("unhashable dict key"));
        }
        match items.iter_mut().find(|(k2, _)| k2.py_eq(&k)) {
            Some(slot) => slot.1 = v,
            None => items.push((k, v)),
        }
        Ok(())
    }

    /// Ints (decimal, 0x, 0o, 0b, with `_`) and floats; a `j` suffix (complex) is refused.
    fn number(&mut self) -> Result<Value, NotALiteral> {
        let start = self.pos;
        let mut text = String::new();
        while let Some(c) = self.peek() {
            let exponent_sign = (c == '+' || c == '-') && matches!(text.chars().last(), Some('e' | 'E')) && !text.starts_with("0x") && !text.starts_with("0X");
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || exponent_sign {
                text.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        let bad = |reason: &str| NotALiteral { at: start, reason: format!("`{text}`: {reason}") };
        if text.ends_with(['j', 'J']) {
            return Err(bad("complex numbers are not supported"));
        }
        let radix = match text.get(..2).map(str::to_ascii_lowercase).as_deref() {
            Some("0x") => 16,
            Some("0o") => 8,
            Some("0b") => 2,
            _ => 10,
        };
        let body = if radix == 10 { text.as_str() } else { &text[2..] };
        if !underscores_ok(body, radix) {
            return Err(bad("misplaced `_`"));
        }
        let clean: String = body.chars().filter(|&c| c != '_').collect();
        if radix != 10 {
            if clean.is_empty() || !clean.chars().all(|c| c.is_digit(radix)) {
                return Err(bad("not a number"));
            }
            return Ok(Value::Int { negative: false, digits: to_decimal(&clean, radix) });
        }
        if clean.chars().all(|c| c.is_ascii_digit()) && !clean.is_empty() {
            if clean.len() > 1 && clean.starts_with('0') && clean.chars().any(|c| c != '0') {
                return Err(bad("leading zeros in a decimal integer"));
            }
            let digits = clean.trim_start_matches('0');
            return Ok(Value::Int { negative: false, digits: if digits.is_empty() { "0".into() } else { digits.into() } });
        }
        let float_shape = {
            let (mantissa, exp) = match clean.find(['e', 'E']) {
                Some(i) => (&clean[..i], Some(clean[i + 1..].trim_start_matches(['+', '-']))),
                None => (clean.as_str(), None),
            };
            let digits_ok = |s: &str| s.chars().all(|c| c.is_ascii_digit());
            let m_ok = match mantissa.split_once('.') {
                Some((a, b)) => digits_ok(a) && digits_ok(b) && !(a.is_empty() && b.is_empty()),
                None => !mantissa.is_empty() && digits_ok(mantissa) && exp.is_some(),
            };
            m_ok && exp.is_none_or(|e| !e.is_empty() && digits_ok(e))
        };
        match clean.parse::<f64>() {
            Ok(f) if float_shape => Ok(Value::Float(f)),
            _ => Err(bad("not a number")),
        }
    }

    /// A string prefix (r, u, b, br, rb in any case) directly followed by a quote.
    fn string_prefix(&self) -> Option<usize> {
        for len in [2, 1] {
            let prefix: String = (0..len).filter_map(|k| self.peek_at(k)).collect::<String>().to_ascii_lowercase();
            if prefix.chars().count() == len && matches!(self.peek_at(len), Some('\'' | '"')) && matches!(prefix.as_str(), "r" | "u" | "b" | "br" | "rb") {
                return Some(len);
            }
        }
        None
    }

    /// One or more adjacent string literals, concatenated; str and bytes do not mix.
    fn strings(&mut self) -> Result<Value, NotALiteral> {
        let start = self.pos;
        let mut text = String::new();
        let mut bytes: Option<Vec<u8>> = None;
        let mut first = true;
        loop {
            self.ws()?;
            let prefix_len = self.string_prefix().unwrap_or(0);
            if prefix_len == 0 && !matches!(self.peek(), Some('\'' | '"')) {
                break;
            }
            let prefix: String = self.chars[self.pos..self.pos + prefix_len].iter().collect::<String>().to_ascii_lowercase();
            self.pos += prefix_len;
            let is_bytes = prefix.contains('b');
            if !first && is_bytes != bytes.is_some() {
                return Err(NotALiteral { at: start, reason: "cannot mix bytes and str literals".into() });
            }
            let part = self.string_body(prefix.contains('r'), is_bytes)?;
            if is_bytes {
                bytes.get_or_insert_with(Vec::new).extend(part.chars().map(|c| c as u8));
            } else {
                text.push_str(&part);
            }
            first = false;
        }
        Ok(match bytes {
            Some(b) => Value::Bytes(b),
            None => Value::Str(text),
        })
    }

    /// The text between the quotes, escapes applied (bytes come back as chars below 256).
    fn string_body(&mut self, raw: bool, bytes: bool) -> Result<String, NotALiteral> {
        let start = self.pos;
        let q = self.peek().expect("a quote");
        let triple = self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q);
        self.pos += if triple { 3 } else { 1 };
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else { return Err(NotALiteral { at: start, reason: "unterminated string".into() }) };
            if c == q && (!triple || (self.peek_at(1) == Some(q) && self.peek_at(2) == Some(q))) {
                self.pos += if triple { 3 } else { 1 };
                return Ok(out);
            }
            if (c == '\n' || c == '\r') && !triple {
                return Err(NotALiteral { at: start, reason: "unterminated string".into() });
            }
            if bytes && !c.is_ascii() {
                return Err(self.error("bytes can only contain ASCII literal characters"));
            }
            self.pos += 1;
            if c != '\\' {
                out.push(c);
                continue;
            }
            let Some(e) = self.peek() else { return Err(NotALiteral { at: start, reason: "unterminated string".into() }) };
            if raw {
                // A backslash keeps the next character from closing the string, and stays.
                out.push('\\');
                out.push(e);
                self.pos += 1;
                continue;
            }
            self.pos += 1;
            match e {
                '\n' => {}
                '\r' => {
                    self.eat('\n');
                }
                '\\' | '\'' | '"' => out.push(e),
                'a' => out.push('\x07'),
                'b' => out.push('\x08'),
                'f' => out.push('\x0c'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'v' => out.push('\x0b'),
                '0'..='7' => {
                    let mut v = e.to_digit(8).expect("octal");
                    for _ in 0..2 {
                        match self.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                v = v * 8 + d;
                                self.pos += 1;
                            }
                            None => break,
                        }
                    }
                    // Bytes keep the low 8 bits of an escape above \377, as Python does.
                    out.push(char::from_u32(if bytes { v & 0xff } else { v }).expect("below 512"));
                }
                'x' => out.push(self.hex_escape(2)?),
                'u' | 'U' if !bytes => out.push(self.hex_escape(if e == 'u' { 4 } else { 8 })?),
                'N' if !bytes => return Err(self.error("\\N{...} escapes are not supported")),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex_escape(&mut self, n: usize) -> Result<char, NotALiteral> {
        let hex: String = (0..n).filter_map(|k| self.peek_at(k)).collect();
        if hex.chars().count() != n || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.error(format!("truncated \\x/\\u escape (needs {n} hex digits)")));
        }
        self.pos += n;
        let v = u32::from_str_radix(&hex, 16).expect("hex");
        char::from_u32(v).ok_or_else(|| self.error("escape is not a Unicode scalar value (surrogate or too large)"))
    }
}

/// Python's rule for `_` in a number: single ones between digits, or right after a radix prefix.
fn underscores_ok(body: &str, radix: u32) -> bool {
    let b: Vec<char> = body.chars().collect();
    b.iter().enumerate().all(|(i, &c)| c != '_' || ((if i == 0 { radix != 10 } else { b[i - 1].is_digit(radix) }) && b.get(i + 1).is_some_and(|n| n.is_digit(radix))))
}

/// Digits in `radix` to a decimal string, any size (base-1e9 limbs).
fn to_decimal(digits: &str, radix: u32) -> String {
    let mut limbs: Vec<u64> = vec![0];
    for c in digits.chars() {
        let mut carry = c.to_digit(radix).expect("checked") as u64;
        for limb in limbs.iter_mut() {
            let v = *limb * radix as u64 + carry;
            *limb = v % 1_000_000_000;
            carry = v / 1_000_000_000;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut s = limbs.last().expect("one limb").to_string();
    for limb in limbs.iter().rev().skip(1) {
        let _ = write!(s, "{limb:09}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(a: &str, b: &str) -> bool {
        parse(a).unwrap().py_eq(&parse(b).unwrap())
    }

    #[test]
    fn python_equality() {
        assert!(eq("1", "1.0") && eq("True", "1") && eq("-0.0", "0") && eq("0x10", "16") && eq("1_000", "1e3"));
        assert!(!eq("[1]", "(1,)") && !eq("'1'", "1") && !eq("b'a'", "'a'"));
        assert!(eq("{1: 'a', True: 'b'}", "{1.0: 'b'}"), "equal keys collapse, the later value wins");
        assert!(eq("{3, 1, 2, 1}", "{1, 2, 3}") && eq("set()", "set()") && !eq("set()", "{}"));
        assert!(eq("'a' 'b'", "'ab'") && eq("r'\\n'", "'\\\\n'") && eq("'\\x41\\101\\u0041'", "'AAA'"));
        assert!(eq("1, 2", "(1, 2)") && eq("(1)", "1") && eq("[1, 2,]", "[1,2]"));
        // 2**53 + 1 is not the float 2**53: Python compares ints and floats exactly.
        assert!(!eq("9007199254740993", "9007199254740992.0") && eq("9007199254740992", "9007199254740992.0"));
    }

    #[test]
    fn not_literals() {
        for text in ["0 or 1", "__import__('os')._exit(0)", "f(3)", "x", "1 +", "--1", "-True", "1j", "07", "f'x'", "[1", "'a", "1\n2", "{[1]: 2}", "{[1]}", "b'\u{e9}'", "'a' b'b'", "1__0", "1_"] {
            assert!(parse(text).is_err(), "{text:?} must not parse");
        }
    }

    #[test]
    fn round_trips_through_python_source() {
        for text in ["[1, -2.5, 'it\\'s', b'\\x00\\xff', None, ..., (True,), {1: {2}}, set(), 1e999, 123456789012345678901234567890]", "'\u{1F600}\\t'"] {
            let v = parse(text).unwrap();
            assert!(v.py_eq(&parse(&v.to_python()).unwrap()), "{text} → {}", v.to_python());
        }
        assert_eq!(parse("0xFFFFFFFFFFFFFFFFFFFF").unwrap().to_python(), "1208925819614629174706175");
    }

    #[test]
    fn call_arguments() {
        let call = parse_call_arguments("'abc', [1, 2], n=3)  # done").unwrap();
        assert_eq!((call.positional.len(), call.keywords.len(), call.keywords[0].0.as_str()), (2, 1, "n"));
        assert!(parse_call_arguments("'abc', 2) and True").is_err(), "nothing may follow the call");
        assert!(parse_call_arguments("'abc', 2").is_err(), "the call must close");
        assert!(parse_call_arguments("__import__('os'))").is_err());
        assert_eq!(parse_call_arguments(")").unwrap().positional.len(), 0);
    }

    /// Python's verdicts (tests/fixtures/literals/make.py): which texts are literals, `==`
    /// between every pair, and every CruxEval row's output and input.
    #[test]
    fn agrees_with_python() {
        let cases: serde_json::Value = serde_json::from_str(include_str!("../../../tests/fixtures/literals/cases.json")).unwrap();
        let texts: Vec<&str> = cases["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
        // Literals Python reads that lopa refuses on purpose (module docs).
        let refused = ["1j", "2+1j", "'\\N{DASH}'", "'\\ud800'"];
        let parsed: Vec<Option<Value>> = texts.iter().map(|t| parse(t).ok()).collect();
        for (i, t) in texts.iter().enumerate() {
            let python = cases["parses"][i].as_bool().unwrap();
            let expected = python && !refused.contains(t);
            assert_eq!(parsed[i].is_some(), expected, "{t:?}: Python says literal={python}; lopa: {:?}", parse(t).err());
        }
        for (i, row) in cases["equal"].as_array().unwrap().iter().enumerate() {
            for (j, verdict) in row.as_str().unwrap().chars().enumerate() {
                if let (Some(a), Some(b), '0' | '1') = (&parsed[i], &parsed[j], verdict) {
                    assert_eq!(a.py_eq(b), verdict == '1', "{:?} == {:?}", texts[i], texts[j]);
                }
            }
        }
        for (text, ok) in cases["call_args"].as_object().unwrap() {
            assert_eq!(parse_call_arguments(text).is_ok(), ok.as_bool().unwrap(), "call arguments {text:?}");
        }
        let file = std::env::var_os("LOPA_DATA").map_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"), std::path::PathBuf::from).join("cruxeval/cruxeval.jsonl");
        let data = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e} (set LOPA_DATA)", file.display()));
        let rows: Vec<serde_json::Value> = data.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let verdicts = cases["cruxeval"].as_array().unwrap();
        assert_eq!(rows.len(), verdicts.len());
        for (i, (row, v)) in rows.iter().zip(verdicts).enumerate() {
            assert_eq!(row["id"], v[0]);
            let output = parse(row["output"].as_str().unwrap());
            assert_eq!(output.is_ok(), v[1].as_bool().unwrap(), "{} output", v[0]);
            let next = parse(rows[(i + 1) % rows.len()]["output"].as_str().unwrap());
            if let (Ok(a), Ok(b)) = (&output, &next) {
                assert_eq!(a.py_eq(b), v[2].as_bool().unwrap(), "{} output == next output", v[0]);
                assert!(a.py_eq(&parse(&a.to_python()).unwrap()), "{} round trip", v[0]);
            }
            let input = format!("{})", row["input"].as_str().unwrap());
            assert_eq!(parse_call_arguments(&input).is_ok(), v[3].as_bool().unwrap(), "{} input {input:?}", v[0]);
        }
    }
}
