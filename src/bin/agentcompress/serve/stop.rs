//! Stop strings over streamed text. Generated text is released only up to the point where no
//! stop string could still begin, so a stop string split across tokens is never streamed in
//! part; when one appears, the text before it is the last released.

/// The generated text of one sequence and how much of it has been released.
#[derive(Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    text: String,
    released: usize,
}

/// What [`StopText::push`] released.
#[derive(Debug, PartialEq)]
pub struct Released {
    /// Text that can be sent to the client now.
    pub text: String,
    /// A stop string was found: the sequence ends here.
    pub stopped: bool,
}

impl StopText {
    /// Watches for `stops` (none: every piece is released as it comes).
    pub fn new(stops: Vec<String>) -> Self {
        StopText {
            stops,
            ..Default::default()
        }
    }

    /// Appends a generated piece; returns what can be released and whether a stop matched.
    pub fn push(&mut self, piece: &str) -> Released {
        self.text.push_str(piece);
        if let Some(at) = self.first_stop() {
            self.text.truncate(at);
            return Released {
                text: self.take_to(at),
                stopped: true,
            };
        }
        let hold = self.held_suffix();
        Released {
            text: self.take_to(self.text.len() - hold),
            stopped: false,
        }
    }

    /// Releases whatever was held back (the sequence ended without a stop string).
    pub fn flush(&mut self) -> String {
        self.take_to(self.text.len())
    }

    /// The text released so far.
    #[cfg(test)]
    pub fn released(&self) -> &str {
        &self.text[..self.released]
    }

    fn take_to(&mut self, end: usize) -> String {
        let out = self.text[self.released..end].to_string();
        self.released = end;
        out
    }

    /// Where the earliest stop string starts. Released text never holds the start of one, so
    /// the search starts at the release mark.
    fn first_stop(&self) -> Option<usize> {
        let tail = &self.text[self.released..];
        self.stops
            .iter()
            .filter_map(|s| tail.find(s.as_str()))
            .min()
            .map(|i| self.released + i)
    }

    /// Bytes at the end of the unreleased text that begin some stop string.
    fn held_suffix(&self) -> usize {
        let tail = &self.text[self.released..];
        tail.char_indices()
            .map(|(i, _)| &tail[i..])
            .find(|suffix| self.stops.iter().any(|s| s.starts_with(suffix)))
            .map_or(0, str::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut s = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for p in pieces {
            let r = s.push(p);
            out.push(r.text);
            if r.stopped {
                return (out, true, s.released().to_string());
            }
        }
        out.push(s.flush());
        (out, false, s.released().to_string())
    }

    #[test]
    fn no_stops_release_every_piece_at_once() {
        let (out, stopped, all) = run(&[], &["a", "b"]);
        assert_eq!(out, ["a", "b", ""]);
        assert!(!stopped);
        assert_eq!(all, "ab");
    }

    #[test]
    fn a_stop_split_across_pieces_is_held_then_cut() {
        let (out, stopped, all) = run(&["END"], &["hello E", "N", "D more"]);
        assert_eq!(out, ["hello ", "", ""]);
        assert!(stopped);
        assert_eq!(all, "hello ");
    }

    #[test]
    fn a_false_start_is_released_when_it_stops_matching() {
        let (out, stopped, all) = run(&["END"], &["x E", "Nx", "y"]);
        assert_eq!(out, ["x ", "ENx", "y", ""]);
        assert!(!stopped);
        assert_eq!(all, "x ENxy");
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_multibyte_text_is_safe() {
        let (_, stopped, all) = run(&["\n\n", "é!"], &["café", "! and\n\n"]);
        assert!(stopped);
        assert_eq!(all, "caf");
    }
}
