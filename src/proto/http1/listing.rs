//! Directory listings: HTML for people, JSON for programs (a request whose Accept
//! names `application/json`).

use super::path::push_encoded;
use super::Dotfiles;
use crate::proto::{path_bytes, DirEntry, FileKind, Listing};
use std::fmt::Write;

/// What a listing is sorted by (`?sort=name|size|date`, `&order=asc|desc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    #[default]
    Name,
    Size,
    Date,
}

/// How a listing is shown: its order, and whether as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    pub sort: Sort,
    pub desc: bool,
    pub json: bool,
}

impl View {
    /// The view a request-target's query asks for; anything it does not understand
    /// is the default (by name, ascending).
    pub fn from_query(target: &str, json: bool) -> View {
        let mut v = View {
            json,
            ..View::default()
        };
        let query = target.split_once('?').map_or("", |(_, q)| q);
        for pair in query.split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("sort", "name") => v.sort = Sort::Name,
                ("sort", "size") => v.sort = Sort::Size,
                ("sort", "date" | "mtime") => v.sort = Sort::Date,
                ("order", "desc") => v.desc = true,
                ("order", "asc") => v.desc = false,
                _ => {}
            }
        }
        v
    }
}

const STYLE: &str = "<style>\n\
:root{color-scheme:light dark;--fg:#1f2328;--bg:#fff;--mute:#59636e;--line:#d1d9e0;--link:#0969da;--hi:#f6f8fa}\n\
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--mute:#9198a1;--line:#3d444d;--link:#4493f8;--hi:#151b23}}\n\
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,\"Segoe UI\",sans-serif}\n\
main{max-width:60rem;margin:2rem auto;padding:0 1rem}\n\
h1{font-size:1.3rem;font-weight:600;word-break:break-all}\n\
table{width:100%;border-collapse:collapse}\n\
th,td{padding:.35rem .6rem;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap}\n\
th{font-weight:600;color:var(--mute)}th a{color:inherit}\n\
td:first-child{white-space:normal;word-break:break-all;width:100%}\n\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\n\
td.t{color:var(--mute);font-variant-numeric:tabular-nums}\n\
tbody tr:hover{background:var(--hi)}\n\
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}\n\
tr.d a{font-weight:600}\n\
p{color:var(--mute)}\n\
</style>\n";

/// Renders the listing of directory `rel` ("" is the root), and its Content-Type.
/// Directories come first, then the entries in the view's order (ties by name, names
/// in byte order). A name is shown lossily decoded and escaped (HTML, or JSON), but
/// linked byte-exactly, percent-encoded, so even a non-UTF-8 name can be fetched. With
/// [`Dotfiles::Deny`] names starting with `.` are left out, as they would be 404
/// (`.well-known` at the root stays). A partial listing (the backend kept only so many
/// entries) says so, and how many it leaves out.
pub fn render(
    rel: &str,
    listing: Listing,
    dotfiles: Dotfiles,
    view: View,
) -> (Vec<u8>, &'static str) {
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
    sort(&mut entries, view);
    let mut title = String::from("/");
    if !rel.is_empty() {
        title.push_str(&String::from_utf8_lossy(
            &path_bytes(rel).unwrap_or_default(),
        ));
        title.push('/');
    }
    if view.json {
        return (
            json(&title, &entries, omitted),
            "Content-Type: application/json\r\n",
        );
    }
    (
        html(rel, &title, &entries, omitted, view),
        "Content-Type: text/html; charset=utf-8\r\n",
    )
}

fn sort(entries: &mut [DirEntry], view: View) {
    entries.sort_unstable_by(|a, b| {
        let key = match view.sort {
            Sort::Name => std::cmp::Ordering::Equal,
            Sort::Size => a.len.cmp(&b.len),
            Sort::Date => a.mtime_sec.cmp(&b.mtime_sec),
        };
        let key = key.then_with(|| a.name.cmp(&b.name));
        let key = if view.desc { key.reverse() } else { key };
        (a.kind != FileKind::Dir)
            .cmp(&(b.kind != FileKind::Dir))
            .then(key)
    });
}

fn html(rel: &str, title: &str, entries: &[DirEntry], omitted: u64, view: View) -> Vec<u8> {
    let mut out = String::with_capacity(2048 + entries.len() * 200);
    let mut t = String::new();
    html_escape(&mut t, title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Index of {t}</title>\n{STYLE}</head>\n<body><main>\n<h1>Index of {t}</h1>\n"
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
    out.push_str("<table>\n<thead><tr>");
    for (sort, label, class) in [
        (Sort::Name, "Name", ""),
        (Sort::Size, "Size", " class=\"n\""),
        (Sort::Date, "Modified (UTC)", ""),
    ] {
        // The column sorted by links to its other order; the others to ascending.
        let (arrow, next) = match (view.sort == sort, view.desc) {
            (true, false) => (" \u{2191}", "desc"),
            (true, true) => (" \u{2193}", "asc"),
            (false, _) => ("", "asc"),
        };
        let key = match sort {
            Sort::Name => "name",
            Sort::Size => "size",
            Sort::Date => "date",
        };
        let _ = write!(
            out,
            "<th{class}><a href=\"?sort={key}&amp;order={next}\">{label}{arrow}</a></th>"
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    if !rel.is_empty() {
        out.push_str("<tr class=\"d\"><td><a href=\"../\">../</a></td><td class=\"n\"></td><td class=\"t\"></td></tr>\n");
    }
    let (mut dirs, mut files) = (0, 0);
    for e in entries {
        let dir = e.kind == FileKind::Dir;
        if dir {
            dirs += 1;
        } else {
            files += 1;
        }
        out.push_str(if dir {
            "<tr class=\"d\"><td><a href=\""
        } else {
            "<tr><td><a href=\""
        });
        push_encoded(&mut out, &e.name);
        out.push_str(if dir { "/\">" } else { "\">" });
        html_escape(&mut out, &String::from_utf8_lossy(&e.name));
        out.push_str(if dir { "/" } else { "" });
        out.push_str("</a></td><td class=\"n\"");
        if dir {
            out.push_str(">\u{2014}");
        } else {
            let _ = write!(out, " title=\"{} bytes\">", e.len);
            human_size(&mut out, e.len);
        }
        out.push_str("</td><td class=\"t\"><time datetime=\"");
        iso(&mut out, e.mtime_sec, 'T');
        out.push_str("Z\">");
        iso(&mut out, e.mtime_sec, ' ');
        out.push_str("</time></td></tr>\n");
    }
    let _ = write!(
        out,
        "</tbody></table>\n<p>{dirs} director{}, {files} file{}</p>\n</main></body></html>\n",
        if dirs == 1 { "y" } else { "ies" },
        if files == 1 { "" } else { "s" },
    );
    out.into_bytes()
}

fn json(title: &str, entries: &[DirEntry], omitted: u64) -> Vec<u8> {
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let dir = e.kind == FileKind::Dir;
            let mut link = String::new();
            push_encoded(&mut link, &e.name);
            if dir {
                link.push('/');
            }
            let mut mtime = String::new();
            iso(&mut mtime, e.mtime_sec, 'T');
            mtime.push('Z');
            serde_json::json!({
                "name": String::from_utf8_lossy(&e.name),
                "kind": match e.kind {
                    FileKind::Dir => "dir",
                    FileKind::File => "file",
                    FileKind::Other => "other",
                },
                "size": e.len,
                "mtime": mtime,
                "link": link,
            })
        })
        .collect();
    let doc = serde_json::json!({ "path": title, "omitted": omitted, "entries": list });
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

/// `1023 B`, `1.0 KiB`, `12.3 MiB`: binary units, one decimal below 100.
pub(super) fn human_size(out: &mut String, n: u64) {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        let _ = write!(out, "{n} B");
        return;
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 100.0 {
        let _ = write!(out, "{v:.1} {}", UNITS[unit]);
    } else {
        let _ = write!(out, "{v:.0} {}", UNITS[unit]);
    }
}

/// `YYYY-MM-DD<sep>HH:MM` in UTC (years 1970 to 9999; earlier or later clamp).
fn iso(out: &mut String, secs: i64, sep: char) {
    let secs = super::date::clamp(secs) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}{sep}{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    );
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
            View::default(),
        );
        let html = String::from_utf8(html.0).unwrap();
        assert!(html.contains("<title>Index of /a&lt;b/</title>"));
        assert!(!html.contains("<script>"));
        let links: Vec<&str> = html
            .match_indices("<a href=\"")
            .map(|(i, _)| &html[i + 9..])
            .map(|s| &s[..s.find('"').unwrap()])
            .filter(|l| !l.starts_with('?'))
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
        assert!(html.contains(">sub dir/</a></td><td class=\"n\">\u{2014}</td><td class=\"t\"><time datetime=\"1970-01-01T00:00Z\">1970-01-01 00:00</time>"));
        assert!(html.contains(">z.txt</a></td><td class=\"n\" title=\"7 bytes\">7 B</td>"));
        assert!(html.contains("<p>1 directory, 3 files</p>"));
    }

    #[test]
    fn dotfiles_are_left_out_unless_allowed() {
        let names = |rel: &str, d| {
            let entries = [".git", ".well-known", "a", ".env"]
                .map(|n| entry(n.as_bytes(), FileKind::Dir, 0))
                .to_vec();
            let html =
                String::from_utf8(render(rel, whole(entries), d, View::default()).0).unwrap();
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
            String::from_utf8(render("", listing, Dotfiles::Deny, View::default()).0).unwrap()
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
        let html = String::from_utf8(render("", whole(vec![]), Dotfiles::Deny, View::default()).0)
            .unwrap();
        assert!(html.contains("<title>Index of /</title>"));
        assert!(!html.contains("../"));
    }

    fn dated(name: &str, kind: FileKind, len: u64, mtime_sec: i64) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            kind,
            len,
            mtime_sec,
        }
    }

    /// The names in the order shown.
    fn order(query: &str) -> Vec<String> {
        let entries = vec![
            dated("b.txt", FileKind::File, 300, 30),
            dated("a.txt", FileKind::File, 100, 20),
            dated("c.txt", FileKind::File, 200, 10),
            dated("zdir", FileKind::Dir, 0, 5),
            dated("adir", FileKind::Dir, 0, 50),
        ];
        let view = View::from_query(query, true);
        let (json, ctype) = render("", whole(entries), Dotfiles::Deny, view);
        assert_eq!(ctype, "Content-Type: application/json\r\n");
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        doc["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn sorting_by_name_size_or_date_keeps_directories_first() {
        for (query, want) in [
            ("/", ["adir", "zdir", "a.txt", "b.txt", "c.txt"]),
            ("/?order=desc", ["zdir", "adir", "c.txt", "b.txt", "a.txt"]),
            ("/?sort=size", ["adir", "zdir", "a.txt", "c.txt", "b.txt"]),
            (
                "/?sort=size&order=desc",
                ["zdir", "adir", "b.txt", "c.txt", "a.txt"],
            ),
            ("/?sort=date", ["zdir", "adir", "c.txt", "a.txt", "b.txt"]),
            (
                "/?order=desc&sort=mtime",
                ["adir", "zdir", "b.txt", "a.txt", "c.txt"],
            ),
            (
                "/?sort=bogus&x",
                ["adir", "zdir", "a.txt", "b.txt", "c.txt"],
            ),
        ] {
            assert_eq!(order(query), want, "{query}");
        }
    }

    #[test]
    fn the_header_row_links_each_column_to_its_sort() {
        let view = View::from_query("/?sort=size", false);
        let html = String::from_utf8(render("d", whole(vec![]), Dotfiles::Deny, view).0).unwrap();
        assert!(
            html.contains("<a href=\"?sort=name&amp;order=asc\">Name</a>"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"?sort=size&amp;order=desc\">Size \u{2191}</a>"),
            "{html}"
        );
        assert!(
            html.contains("prefers-color-scheme:dark"),
            "a dark-mode stylesheet"
        );
        assert!(!html.contains("<script"), "no JavaScript");
    }

    #[test]
    fn json_entries_are_escaped_and_link_byte_exactly() {
        let entries = vec![
            entry(b"quote\"back\\slash", FileKind::File, 5),
            entry(b"bad\xffname", FileKind::File, 2),
            entry(b"sub dir", FileKind::Dir, 4096),
        ];
        let (json, _) = render(
            "x",
            whole(entries),
            Dotfiles::Deny,
            View {
                json: true,
                ..View::default()
            },
        );
        let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(doc["path"], "/x/");
        assert_eq!(doc["omitted"], 0);
        let e = doc["entries"].as_array().unwrap();
        assert_eq!(e[0]["name"], "sub dir");
        assert_eq!(
            (e[0]["kind"].as_str(), e[0]["link"].as_str()),
            (Some("dir"), Some("sub%20dir/"))
        );
        assert_eq!(e[1]["name"], "bad\u{FFFD}name");
        assert_eq!(e[1]["link"], "bad%FFname");
        assert_eq!(e[2]["name"], "quote\"back\\slash");
        assert_eq!(
            (e[2]["size"].as_u64(), e[2]["mtime"].as_str()),
            (Some(5), Some("1970-01-01T00:00Z"))
        );
    }

    #[test]
    fn sizes_and_dates_read_like_people_write_them() {
        let size = |n| {
            let mut s = String::new();
            human_size(&mut s, n);
            s
        };
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(150 * 1024 * 1024), "150 MiB");
        assert_eq!(size(5 << 30), "5.0 GiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
        let date = |s| {
            let mut out = String::new();
            iso(&mut out, s, ' ');
            out
        };
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(-5), "1970-01-01 00:00");
        assert_eq!(date(951_782_400), "2000-02-29 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(date(253_402_300_799), "9999-12-31 23:59");
        assert_eq!(date(i64::MAX), "9999-12-31 23:59");
    }
}
