//! A live progress line for the CLI's long runs.
//!
//! On a terminal the line is redrawn in place (`\r`). Anywhere else (a pipe, a file, CI) a
//! carriage return does not go back: the updates would run together on one line, so each is
//! written as a line of its own instead.

use std::io::{IsTerminal, Write};

pub struct Progress<W: Write> {
    out: W,
    /// Redraw in place: `out` is a terminal.
    live: bool,
    /// A line is drawn and not yet ended.
    open: bool,
}

impl Progress<std::io::Stderr> {
    /// Progress on stderr, redrawn in place when stderr is a terminal.
    pub fn stderr() -> Self {
        let out = std::io::stderr();
        let live = out.is_terminal();
        Progress::new(out, live)
    }
}

impl<W: Write> Progress<W> {
    pub fn new(out: W, live: bool) -> Self {
        Progress {
            out,
            live,
            open: false,
        }
    }

    /// Whether updates replace each other in place; when not, a caller with many small
    /// updates may show only some of them.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Shows `line`, replacing the previous one on a terminal. Progress is best effort: a
    /// write error (stderr closed) is ignored.
    pub fn show(&mut self, line: &str) {
        let _ = if self.live {
            self.open = true;
            write!(self.out, "\r{line}")
        } else {
            // The padding that wipes a longer previous line on a terminal is noise here.
            writeln!(self.out, "{}", line.trim_end())
        };
        let _ = self.out.flush();
    }

    /// Ends the line drawn in place, so that what follows starts on a line of its own.
    pub fn finish(&mut self) {
        if self.open {
            let _ = writeln!(self.out);
            self.open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(live: bool) -> String {
        let mut p = Progress::new(Vec::new(), live);
        p.show("  1 s   ");
        p.show("  2 s");
        p.finish();
        p.finish();
        String::from_utf8(p.out).unwrap()
    }

    #[test]
    fn a_terminal_redraws_one_line_in_place() {
        assert_eq!(shown(true), "\r  1 s   \r  2 s\n");
    }

    #[test]
    fn elsewhere_each_update_is_a_line_of_its_own() {
        assert_eq!(shown(false), "  1 s\n  2 s\n");
    }
}
