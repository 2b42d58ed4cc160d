//! Stop strings: where the first one ends an answer. The embedded engine checks the text after
//! each new token and ends the row there (vLLM does the same with `stop`); routes and streams
//! cut what they send before it. An answer's tokens include the one that completed the stop
//! string, as vLLM counts them.

/// Stop strings searched over a text that grows token by token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStrings {
    stops: Vec<String>,
    longest: usize,
    searched: usize,
}

/// Bytes a text may change behind its end when more tokens arrive: a character cut by a token
/// boundary decodes as U+FFFD (3 bytes) until the rest of it comes.
const UNSETTLED: usize = 4;

impl StopStrings {
    pub fn new(stops: Vec<String>) -> Self {
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Self { stops, longest, searched: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    pub fn strings(&self) -> &[String] {
        &self.stops
    }

    /// Where the first stop string starts in `text`, the whole answer so far. Each call searches
    /// only where the text added since the last call could complete one.
    pub fn find(&mut self, text: &str) -> Option<usize> {
        if self.stops.is_empty() {
            return None;
        }
        let from = floor_boundary(text, self.searched.saturating_sub(self.longest + UNSETTLED));
        self.searched = text.len();
        self.stops.iter().filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i)).min()
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_string_is_found_across_pieces_and_only_once_searched() {
        let mut s = StopStrings::new(vec!["\n\n".into(), "END".into()]);
        assert_eq!(s.find("a\n"), None);
        assert_eq!(s.find("a\n\nb"), Some(1), "completed by the next piece");
        let mut s = StopStrings::new(vec!["EN".into(), "END".into()]);
        assert_eq!(s.find("xxE"), None);
        assert_eq!(s.find("xxEND"), Some(2), "the earliest start wins");
        // A character decoded in two steps (U+FFFD first) is searched again once it is whole.
        let mut s = StopStrings::new(vec!["é".into()]);
        assert_eq!(s.find("ab\u{FFFD}"), None);
        assert_eq!(s.find("abé"), Some(2));
        assert_eq!(StopStrings::default().find("anything"), None);
    }
}
