// The Go half of the tlog interoperability test (see tests/tlog_interop.sh and tests/tlog_fixture.cc).
// It checks a log our C++ library wrote with golang.org/x/mod/sumdb/tlog and sumdb/note, which we did not
// write, and writes a checkpoint and proofs of its own for the C++ side to check:
//   - DIR/checkpoint opens with note.Open and the verifier key in DIR/vkey;
//   - the tree hash recomputed from the C2SP tiles under DIR through tlog.TileHashReader (which checks the
//     tiles on the tree's right edge against the checkpoint) equals the checkpoint's root, and every full
//     tile hashes to its entry in the tile above (checked here explicitly);
//   - every entry in the entry bundles hashes to its level-0 tile hash;
//   - every proof in DIR/proofs.txt verifies with tlog.CheckRecord / tlog.CheckTree, for roots that
//     TreeHash recomputes from the tiles, and equals the proof tlog computes from the tiles;
//   - then, from the entries alone, it builds its own tree, signs a checkpoint with a fresh note key and
//     writes DIR/go/{vkey,checkpoint,proofs.txt}.
//
// Built in GOPATH mode, offline: GO111MODULE=off GOPATH=/usr/share/gocode go run main.go DIR
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const height = 8

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "tlog_interop (Go): "+format+"\n", args...)
	os.Exit(1)
}

// c2spPath maps Go's tile (whose path names the height: tile/8/L/N) to the C2SP path (tile/L/N), and
// level -1 (Go's "data") to tile/entries.
func c2spPath(t tlog.Tile) string {
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", height))
	if strings.HasPrefix(p, "data/") {
		return "tile/entries/" + strings.TrimPrefix(p, "data/")
	}
	return "tile/" + p
}

type dirTiles struct{ dir string }

func (d dirTiles) Height() int { return height }

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		data, err := os.ReadFile(filepath.Join(d.dir, c2spPath(t)))
		if errors.Is(err, os.ErrNotExist) && t.W < 1<<height {
			// C2SP lets a log delete a partial tile once the full one exists: read that instead.
			full := t
			full.W = 1 << height
			data, err = os.ReadFile(filepath.Join(d.dir, c2spPath(full)))
			if err == nil && len(data) >= t.W*tlog.HashSize {
				data = data[:t.W*tlog.HashSize]
			}
		}
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

func readBundle(dir string, n int64, w int) [][]byte {
	t := tlog.Tile{H: height, L: -1, N: n, W: w}
	data, err := os.ReadFile(filepath.Join(dir, c2spPath(t)))
	if err != nil {
		fail("entry bundle: %v", err)
	}
	var entries [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			fail("bundle %s: truncated length", c2spPath(t))
		}
		l := int(binary.BigEndian.Uint16(data))
		if len(data) < 2+l {
			fail("bundle %s: truncated entry", c2spPath(t))
		}
		entries = append(entries, data[2:2+l])
		data = data[2+l:]
	}
	if len(entries) != w {
		fail("bundle %s holds %d entries, want %d", c2spPath(t), len(entries), w)
	}
	return entries
}

type checkpoint struct {
	origin string
	size   int64
	root   tlog.Hash
}

func parseCheckpoint(text string) checkpoint {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		fail("checkpoint has %d lines", len(lines))
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		fail("checkpoint size: %v", err)
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		fail("checkpoint root: %v", err)
	}
	return checkpoint{lines[0], size, root}
}

func parseProof(s string) []tlog.Hash {
	if s == "-" {
		return nil
	}
	var p []tlog.Hash
	for _, part := range strings.Split(s, ",") {
		h, err := tlog.ParseHash(part)
		if err != nil {
			fail("proof hash %q: %v", part, err)
		}
		p = append(p, h)
	}
	return p
}

func proofText(p []tlog.Hash) string {
	if len(p) == 0 {
		return "-"
	}
	parts := make([]string, len(p))
	for i, h := range p {
		parts[i] = h.String()
	}
	return strings.Join(parts, ",")
}

func equal(a, b []tlog.Hash) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// tileRoot is the Merkle hash of a full tile's 256 hashes.
func tileRoot(data []byte) tlog.Hash {
	level := make([]tlog.Hash, len(data)/tlog.HashSize)
	for i := range level {
		copy(level[i][:], data[i*tlog.HashSize:])
	}
	for len(level) > 1 {
		next := make([]tlog.Hash, len(level)/2)
		for i := range next {
			next[i] = tlog.NodeHash(level[2*i], level[2*i+1])
		}
		level = next
	}
	return level[0]
}

type memHashes []tlog.Hash

func (m *memHashes) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(*m)) {
			return nil, fmt.Errorf("no stored hash %d", x)
		}
		out[i] = (*m)[x]
	}
	return out, nil
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: main.go DIR")
	}
	dir := os.Args[1]

	// 1. Our checkpoint, opened with our verifier key.
	vkey, err := os.ReadFile(filepath.Join(dir, "vkey"))
	if err != nil {
		fail("%v", err)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		fail("note.NewVerifier(our vkey): %v", err)
	}
	msg, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		fail("%v", err)
	}
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		fail("note.Open(our checkpoint): %v", err)
	}
	cp := parseCheckpoint(n.Text)
	if cp.origin != verifier.Name() {
		fail("origin %q is not the key name %q", cp.origin, verifier.Name())
	}

	// 2. The tree hash from our tiles, every tile checked against the checkpoint.
	thr := tlog.TileHashReader(tlog.Tree{N: cp.size, Hash: cp.root}, dirTiles{dir})
	th, err := tlog.TreeHash(cp.size, thr)
	if err != nil {
		fail("TreeHash from our tiles: %v", err)
	}
	if th != cp.root {
		fail("our tiles hash to %v, the checkpoint says %v", th, cp.root)
	}

	// 3. Every full tile against its hash in the tile above, walked explicitly with tlog's exported
	// functions: the TileHashReader of the Debian 12 x/mod checks the tiles on the tree's right edge against
	// the root, but in this version skips the parent check of some other tiles it reads (those beyond
	// len(stx) only), so a corrupted inner tile could otherwise pass it.
	for _, t := range tlog.NewTiles(height, 0, cp.size) {
		if t.W != 1<<height {
			continue
		}
		parent := tlog.Tile{H: height, L: t.L + 1, N: t.N >> height, W: int(cp.size>>(uint(t.L+1)*height)) - int(t.N>>height)<<height}
		if parent.W > 1<<height {
			parent.W = 1 << height
		}
		data, err := dirTiles{dir}.ReadTiles([]tlog.Tile{t, parent})
		if err != nil {
			fail("reading %s and its parent: %v", c2spPath(t), err)
		}
		want, err := tlog.HashFromTile(parent, data[1], tlog.StoredHashIndex(height*(t.L+1), t.N))
		if err != nil {
			fail("hash of %s in %s: %v", c2spPath(t), c2spPath(parent), err)
		}
		if tileRoot(data[0]) != want {
			fail("tile %s does not hash to its entry in %s", c2spPath(t), c2spPath(parent))
		}
	}

	// 4. Every entry in the bundles against its leaf hash.
	var entries [][]byte
	for start := int64(0); start < cp.size; start += 1 << height {
		w := int(cp.size - start)
		if w > 1<<height {
			w = 1 << height
		}
		bundle := readBundle(dir, start>>height, w)
		indexes := make([]int64, w)
		for i := range indexes {
			indexes[i] = tlog.StoredHashIndex(0, start+int64(i))
		}
		leaves, err := thr.ReadHashes(indexes)
		if err != nil {
			fail("leaf hashes %d..: %v", start, err)
		}
		for i, e := range bundle {
			if tlog.RecordHash(e) != leaves[i] {
				fail("entry %d in the bundle does not hash to its leaf", start+int64(i))
			}
		}
		entries = append(entries, bundle...)
	}

	// 5. Our proofs.
	f, err := os.Open(filepath.Join(dir, "proofs.txt"))
	if err != nil {
		fail("%v", err)
	}
	checked := 0
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		fields := strings.Split(scanner.Text(), " ")
		if len(fields) != 6 {
			fail("bad proof line %q", scanner.Text())
		}
		t, err1 := strconv.ParseInt(fields[1], 10, 64)
		i, err2 := strconv.ParseInt(fields[2], 10, 64)
		a, err3 := tlog.ParseHash(fields[3])
		b, err4 := tlog.ParseHash(fields[4])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			fail("bad proof line %q", scanner.Text())
		}
		p := parseProof(fields[5])
		switch fields[0] {
		case "inclusion":
			root, err := tlog.TreeHash(t, thr)
			if err != nil || root != b {
				fail("root of size %d: ours %v, from the tiles %v (%v)", t, b, root, err)
			}
			if err := tlog.CheckRecord(p, t, b, i, a); err != nil {
				fail("CheckRecord(%d in %d): %v", i, t, err)
			}
			if a != tlog.RecordHash(entries[i]) {
				fail("leaf hash of %d is not the bundle entry's", i)
			}
			mine, err := tlog.ProveRecord(t, i, thr)
			if err != nil || !equal(mine, p) {
				fail("ProveRecord(%d, %d) from the tiles differs (%v)", t, i, err)
			}
		case "consistency":
			root, err := tlog.TreeHash(t, thr)
			old, err2 := tlog.TreeHash(i, thr)
			if err != nil || err2 != nil || root != a || old != b {
				fail("roots of sizes %d/%d differ from the tiles'", t, i)
			}
			if err := tlog.CheckTree(p, t, a, i, b); err != nil {
				fail("CheckTree(%d -> %d): %v", i, t, err)
			}
			mine, err := tlog.ProveTree(t, i, thr)
			if err != nil || !equal(mine, p) {
				fail("ProveTree(%d, %d) from the tiles differs (%v)", t, i, err)
			}
		default:
			fail("bad proof line %q", scanner.Text())
		}
		checked++
	}
	if checked == 0 {
		fail("no proofs to check")
	}
	fmt.Printf("Go verified our checkpoint (size %d), %d tiles' worth of entries and %d proofs\n", cp.size, (cp.size+255)/256, checked)

	// 6. The other direction: Go's own tree over the same entries, a checkpoint it signs, proofs.
	var hashes memHashes
	for i, e := range entries {
		h, err := tlog.StoredHashes(int64(i), e, &hashes)
		if err != nil {
			fail("StoredHashes: %v", err)
		}
		hashes = append(hashes, h...)
	}
	size := int64(len(entries))
	root, err := tlog.TreeHash(size, &hashes)
	if err != nil {
		fail("%v", err)
	}
	skey, gvkey, err := note.GenerateKey(rand.Reader, "go.example/interop")
	if err != nil {
		fail("%v", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		fail("%v", err)
	}
	signed, err := note.Sign(&note.Note{Text: fmt.Sprintf("go.example/interop\n%d\n%s\n", size, root)}, signer)
	if err != nil {
		fail("%v", err)
	}
	var out strings.Builder
	for _, t := range []int64{1, 2, 7, 256, 257, 4097, size / 2, size - 1, size} {
		if t < 1 || t > size {
			continue
		}
		rt, _ := tlog.TreeHash(t, &hashes)
		for _, i := range []int64{0, t / 2, t - 1} {
			p, err := tlog.ProveRecord(t, i, &hashes)
			if err != nil {
				fail("%v", err)
			}
			fmt.Fprintf(&out, "inclusion %d %d %s %s %s\n", t, i, tlog.RecordHash(entries[i]), rt, proofText(p))
		}
		for _, m := range []int64{1, t / 2, t} {
			if m < 1 {
				continue
			}
			rm, _ := tlog.TreeHash(m, &hashes)
			p, err := tlog.ProveTree(t, m, &hashes)
			if err != nil {
				fail("%v", err)
			}
			fmt.Fprintf(&out, "consistency %d %d %s %s %s\n", t, m, rt, rm, proofText(p))
		}
	}
	godir := filepath.Join(dir, "go")
	if err := os.MkdirAll(godir, 0o755); err != nil {
		fail("%v", err)
	}
	for name, data := range map[string]string{"vkey": gvkey + "\n", "checkpoint": string(signed), "proofs.txt": out.String()} {
		if err := os.WriteFile(filepath.Join(godir, name), []byte(data), 0o644); err != nil {
			fail("%v", err)
		}
	}
	fmt.Printf("Go wrote its checkpoint (size %d) and proofs under %s\n", size, godir)
}
