//! HTML directory listings.

use super::date;
use super::path::push_encoded;
use super::Dotfiles;
use crate::proto::{path_bytes, FileKind, Listing};
use std::fmt::Write;

/// Renders the listing of directory `rel` ("" is the root). Directories come first, then
/// names in byte order. A name is shown lossily decoded and HTML-escaped, but linked
/// byte-exactly, percent-encoded, so even a non-UTF-8 name can be fetched. With
/// [`Dotfiles::Deny`] names starting with `.` are left out, as they would be 404
/// (`.well-known` at the root stays). A partial listing (the backend kept only so many
/// entries) says so, and how many it leaves out, above the table.
pub fn render(rel: &str, listing: Listing, dotfiles: Dotfiles) -> Vec<u8> {
    let Listing {
        mut entries,
        omitted,
    } = listing;
    entries.retain(|e| e.name != b"." && e.name != b"..");
    if dotfiles == Dotfiles::Deny {
        entries.retain(|e| {
            e.name.first() != Some(&b'.') || (rel.is_empty() && e.name == b".well-known")
        });
    }
    entries.sort_unstable_by(|a, b| {
        (a.kind != FileKind::Dir, &a.name).cmp(&(b.kind != FileKind::Dir, &b.name))
    });
    let mut title = String::from("/");
    if !rel.is_empty() {
        let rel = path_bytes(rel).unwrap_or_default();
        html_escape(&mut title, &String::from_utf8_lossy(&rel));
        title.push('/');
    }
    let mut out = String::with_capacity(256 + entries.len() * 160);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n"
    );
    if omitted > 0 {
        let _ = writeln!(
            out,
            "<p><strong>Partial listing:</strong> {omitted} more {} in this directory {} \
             not shown. A listing holds only the first entries the file system returns.</p>",
            if omitted == 1 { "entry" } else { "entries" },
            if omitted == 1 { "is" } else { "are" },
        );
    }
    out.push_str("<table>\n");
    if !rel.is_empty() {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for e in &entries {
        let dir = e.kind == FileKind::Dir;
        out.push_str("<tr><td><a href=\"");
        push_encoded(&mut out, &e.name);
        out.push_str(if dir { "/\">" } else { "\">" });
        html_escape(&mut out, &String::from_utf8_lossy(&e.name));
        out.push_str(if dir { "/" } else { "" });
        let _ = write!(
            out,
            "</a></td><td>{}</td><td>",
            date::format(date::clamp(e.mtime_sec))
        );
        if dir {
            out.push('-');
        } else {
            let _ = write!(out, "{}", e.len);
        }
        out.push_str("</td></tr>\n");
    }
    out.push_str("</table>\n</body></html>\n");
    out.into_bytes()
}

fn html_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::DirEntry;

    fn entry(name: &[u8], kind: FileKind, len: u64) -> DirEntry {
        DirEntry {
            name: name.to_vec(),
            kind,
            len,
            mtime_sec: 0,
        }
    }

    fn whole(entries: Vec<DirEntry>) -> Listing {
        Listing {
            entries,
            omitted: 0,
        }
    }

    #[test]
    fn sorted_escaped_and_encoded() {
        let html = render(
            "a<b",
            whole(vec![
                entry(b"z.txt", FileKind::File, 7),
                entry(b"<script>&\"x'", FileKind::File, 1),
                entry(b"sub dir", FileKind::Dir, 4096),
                entry(b"bad\xffname", FileKind::File, 2),
                entry(b"..", FileKind::Dir, 0),
            ]),
            Dotfiles::Deny,
        );
        let html = String::from_utf8(html).unwrap();
        assert!(html.contains("<title>Index of /a&lt;b/</title>"));
        assert!(!html.contains("<script>"));
        let links: Vec<&str> = html
            .match_indices("<a href=\"")
            .map(|(i, _)| &html[i + 9..])
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert_eq!(
            links,
            [
                "../",
                "sub%20dir/",
                "%3Cscript%3E%26%22x%27",
                "bad%FFname",
                "z.txt"
            ]
        );
        assert!(html.contains(">&lt;script&gt;&amp;&quot;x&#39;</a>"));
        assert!(html.contains(">bad\u{FFFD}name</a>"));
        assert!(html.contains(">sub dir/</a></td><td>Thu, 01 Jan 1970 00:00:00 GMT</td><td>-</td>"));
        assert!(html.contains(">z.txt</a></td><td>Thu, 01 Jan 1970 00:00:00 GMT</td><td>7</td>"));
    }

    #[test]
    fn dotfiles_are_left_out_unless_allowed() {
        let names = |rel: &str, d| {
            let entries = [".git", ".well-known", "a", ".env"]
                .map(|n| entry(n.as_bytes(), FileKind::Dir, 0))
                .to_vec();
            let html = String::from_utf8(render(rel, whole(entries), d)).unwrap();
            [".git", ".well-known", ".env"].map(|n| html.contains(&format!(">{n}/<")))
        };
        assert_eq!(names("", Dotfiles::Deny), [false, true, false]);
        assert_eq!(names("sub", Dotfiles::Deny), [false, false, false]);
        assert_eq!(names("sub", Dotfiles::Allow), [true, true, true]);
    }

    #[test]
    fn a_partial_listing_says_how_much_it_leaves_out() {
        let html = |omitted| {
            let listing = Listing {
                entries: vec![entry(b"a", FileKind::File, 1)],
                omitted,
            };
            String::from_utf8(render("", listing, Dotfiles::Deny)).unwrap()
        };
        assert!(!html(0).contains("Partial"));
        assert!(html(1)
            .contains("Partial listing:</strong> 1 more entry in this directory is not shown"));
        assert!(html(12345).contains(
            "Partial listing:</strong> 12345 more entries in this directory are not shown"
        ));
    }

    #[test]
    fn no_parent_link_at_root() {
        let html = String::from_utf8(render("", whole(vec![]), Dotfiles::Deny)).unwrap();
        assert!(html.contains("<title>Index of /</title>"));
        assert!(!html.contains("../"));
    }
}
