//! Debian packages as sources, through the real binary: a `.deb` URL is unpacked into a
//! merged-/usr tree, several compose in one `dest`, and two shipping one path are refused.

#![allow(clippy::disallowed_methods)] // tests may use std::fs; src uses fs-err (clippy.toml)

mod common;

use common::*;

/// A .deb (deb(5): ar of debian-binary, control.tar.gz, data.tar.xz) of `package` holding
/// `files` (path, content) and `links` (path, target) in its data.tar.
fn deb(package: &str, files: &[(&str, &str)], links: &[(&str, &str)]) -> Vec<u8> {
    fn tar(files: &[(&str, &str)], links: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(content.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, path, content.as_bytes()).unwrap();
        }
        for (path, target) in links {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, path, target).unwrap();
        }
        b.into_inner().unwrap()
    }
    let control = format!("Package: {package}\nVersion: 1.0\nArchitecture: amd64\n");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar(&[("./control", &control)], &[])).unwrap();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
    std::io::Write::write_all(&mut xz, &tar(files, links)).unwrap();
    let members: [(&str, Vec<u8>); 3] = [
        ("debian-binary", b"2.0\n".to_vec()),
        ("control.tar.gz", gz.finish().unwrap()),
        ("data.tar.xz", xz.finish().unwrap()),
    ];
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// Writes `debs` into the project as files served by `file://` and a recipe `root` that
/// unpacks them all into `$src` and runs `step`.
fn deb_recipe(p: &Project, debs: &[(&str, Vec<u8>)], step: &str) {
    let mut text = format!("name = \"root\"\nversion = \"1\"\nsteps = [{step:?}]\n");
    for (file, bytes) in debs {
        let path = p.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        text.push_str(&format!(
            "[[sources]]\nurl = \"file://{}\"\nsha256 = \"{}\"\n",
            path.display(),
            pybake::hash::SourceHash::of(bytes).to_hex()
        ));
    }
    p.recipe("root", &text);
}

#[test]
fn debs_unpack_into_one_merged_usr_tree() {
    let p = Project::new();
    let libc = deb(
        "libc6",
        &[("./lib/x86_64-linux-gnu/ld.so", "loader\n")],
        &[("./lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so")],
    );
    let tools = deb(
        "tools",
        &[("./bin/x", "#!/bin/sh\n"), ("./usr/bin/y", "y\n")],
        &[("./usr/bin/awk", "/etc/alternatives/awk")],
    );
    deb_recipe(
        &p,
        &[
            ("libc6_1.0_amd64.deb", libc),
            ("tools_1.0_amd64.deb", tools),
        ],
        "cd $src && test -f usr/bin/x && test -x usr/bin/x && test -f usr/bin/y && \
         mkdir -p $out && for l in bin lib lib64 usr/lib64/ld.so usr/bin/awk; do \
         echo \"$l -> $(readlink $l)\" >> $out/links; done && cat lib64/ld.so > $out/loader",
    );
    let out = p.run(&["realize", "root"]).ok().line();
    assert_eq!(
        std::fs::read_to_string(format!("{out}/links")).unwrap(),
        "bin -> usr/bin\nlib -> usr/lib\nlib64 -> usr/lib64\n\
         usr/lib64/ld.so -> ../lib/x86_64-linux-gnu/ld.so\n\
         usr/bin/awk -> ../../etc/alternatives/awk\n"
    );
    assert_eq!(
        std::fs::read_to_string(format!("{out}/loader")).unwrap(),
        "loader\n"
    );
}

#[test]
fn two_debs_shipping_one_file_are_refused_by_name() {
    let p = Project::new();
    let a = deb("coreutils", &[("./bin/true", "a")], &[]);
    let b = deb("busybox", &[("./usr/bin/true", "b")], &[]);
    deb_recipe(
        &p,
        &[("coreutils_1.0_amd64.deb", a), ("busybox_1.0_amd64.deb", b)],
        "mkdir $out",
    );
    let r = p.run(&["realize", "root"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("usr/bin/true") && r.stderr.contains("busybox 1.0"),
        "names the path and the package: {}",
        r.stderr
    );
}
