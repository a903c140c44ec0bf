package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
)

func TestOpenSource(t *testing.T) {
	dir := t.TempDir()
	qcow := filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(qcow, []byte("QFI\xfb\x00\x00\x00\x03rest"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(raw, []byte("MZ kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/disk.qcow2" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, qcow)
	}))
	defer srv.Close()
	sum := func(path string) string {
		b, _ := os.ReadFile(path)
		h := sha256.Sum256(b)
		return hex.EncodeToString(h[:])
	}
	digest := "#sha256=" + sum(qcow)
	other := "#sha256=" + sum(raw)
	t.Setenv("TMPDIR", t.TempDir()) // where a download waits for its check
	// A local path, a file:// URL, a path and a download with their digest: streamed with size and format.
	for src, want := range map[string]string{qcow: "qcow2", "file://" + qcow: "qcow2", raw: "raw",
		qcow + digest: "qcow2", srv.URL + "/disk.qcow2" + digest: "qcow2"} {
		s, err := openSource(context.Background(), src)
		if err != nil {
			t.Fatalf("openSource(%s): %v", src, err)
		}
		body, _ := io.ReadAll(s)
		if s.format != want || int64(len(body)) != s.size || s.close() != nil {
			t.Errorf("openSource(%s): format %q size %d, read %d", src, s.format, s.size, len(body))
		}
	}
	if left, _ := os.ReadDir(os.Getenv("TMPDIR")); len(left) != 0 {
		t.Errorf("a checked download must leave no temporary file after close: %v", left)
	}
	// A download without its digest, or with another file's, is refused; nothing is left behind.
	for bad, words := range map[string]string{
		srv.URL + "/disk.qcow2":         "refused without its digest",
		srv.URL + "/disk.qcow2" + other: "not the " + other[8:],
		qcow + other:                    "not the " + other[8:],
		srv.URL + "/disk.qcow2#md5=x":   "the fragment must be #sha256=",
		srv.URL + "/missing" + digest:   "404",
		"ftp://example/x":               "not supported",
		filepath.Join(dir, "none"):      "no such file",
	} {
		_, err := openSource(context.Background(), bad)
		if err == nil || !strings.Contains(err.Error(), words) {
			t.Errorf("openSource(%s) = %v, want an error with %q", bad, err, words)
		}
	}
	if left, _ := os.ReadDir(os.Getenv("TMPDIR")); len(left) != 0 {
		t.Errorf("a refused download must leave no temporary file: %v", left)
	}
}

func TestValidateVolume(t *testing.T) {
	for _, c := range []struct {
		a  volumeArgs
		ok bool
	}{
		{volumeArgs{Name: "b", Pool: "p", Source: "/x", Format: "qcow2"}, true},
		{volumeArgs{Name: "o", Pool: "p", BaseVolumeID: "/p/b", Format: "qcow2"}, true},
		{volumeArgs{Name: "e", Pool: "p", Size: 1 << 30}, true},
		{volumeArgs{Name: "none", Pool: "p"}, false},
		{volumeArgs{Name: "two", Pool: "p", Source: "/x", BaseVolumeID: "/p/b"}, false},
		{volumeArgs{Name: "rawov", Pool: "p", BaseVolumeID: "/p/b", Format: "raw"}, false},
		{volumeArgs{Name: "fmt", Pool: "p", Source: "/x", Format: "vmdk"}, false},
		{volumeArgs{Name: "bn", Pool: "p", BaseVolumeName: "b"}, false},
	} {
		if err := validateVolume(&c.a); (err == nil) != c.ok {
			t.Errorf("%s: validateVolume = %v, want ok=%v", c.a.Name, err, c.ok)
		}
	}
}

// fakeShutdown records how a guest was asked to shut down; the first `fail` requests fail.
type fakeShutdown struct {
	fail  int
	calls []string
}

func (f *fakeShutdown) answer(how string) error {
	f.calls = append(f.calls, how)
	if len(f.calls) <= f.fail {
		return errors.New("no")
	}
	return nil
}

func (f *fakeShutdown) DomainShutdownFlags(_ libvirt.Domain, fl libvirt.DomainShutdownFlagValues) error {
	return f.answer(map[libvirt.DomainShutdownFlagValues]string{
		libvirt.DomainShutdownGuestAgent: "agent", libvirt.DomainShutdownAcpiPowerBtn: "acpi"}[fl])
}

func (f *fakeShutdown) DomainShutdown(libvirt.Domain) error { return f.answer("plain") }

func TestAskShutdownAgentThenACPI(t *testing.T) {
	for fail, want := range map[int]string{0: "agent", 1: "agent acpi", 2: "agent acpi plain", 3: "agent acpi plain"} {
		f := &fakeShutdown{fail: fail}
		err := askShutdown(f, libvirt.Domain{})
		if got := strings.Join(f.calls, " "); got != want || (err != nil) != (fail == 3) {
			t.Errorf("%d failing: asked %q (%v), want %q", fail, got, err, want)
		}
	}
}

func TestGrowToGrowsOnlyAndRefusesAShrink(t *testing.T) {
	const gib = 1 << 30
	for _, c := range []struct {
		capacity uint64
		size     int64
		grow     bool
		refused  string
	}{
		{4 * gib, 8 * gib, true, ""},
		{4 * gib, 4 * gib, false, ""}, // the same: nothing to do
		{4 * gib, 0, false, ""},       // no size asked for: it keeps the one it has
		{8 * gib, 4 * gib, false, `volume "v": size 4 GiB (4294967296 bytes) is smaller than its capacity 8 GiB ` +
			`(8589934592 bytes): a volume only grows (shrinking would cut the filesystem on it); set a size of at ` +
			`least 8 GiB (8589934592 bytes)`},
		{8*gib + 512, 8 * gib, false, "is smaller than its capacity 8589935104 bytes"},
	} {
		grow, err := growTo("v", c.capacity, c.size)
		if grow != c.grow || (err == nil) != (c.refused == "") || (err != nil && !strings.Contains(err.Error(), c.refused)) {
			t.Errorf("growTo(%d, %d) = %v, %v; want %v, %q", c.capacity, c.size, grow, err, c.grow, c.refused)
		}
	}
}

// TestGrowStoppedRestartsWhatItStopped: the running domains of a disk are stopped, the volume grown, and
// every stopped domain started again, even when the resize fails; one that does not stop leaves it as is.
func TestGrowStoppedRestartsWhatItStopped(t *testing.T) {
	run := func(stopFails, growFails string) ([]string, error) {
		var calls []string
		err := growStopped([]string{"a", "b"},
			func(d string) error {
				calls = append(calls, "stop "+d)
				if d == stopFails {
					return errors.New("stop " + d + " failed")
				}
				return nil
			},
			func() error {
				calls = append(calls, "grow")
				if growFails != "" {
					return errors.New(growFails)
				}
				return nil
			},
			func(d string) error { calls = append(calls, "start "+d); return nil })
		return calls, err
	}
	for _, c := range []struct {
		stopFails, growFails string
		want                 []string
		err                  string
	}{
		{"", "", []string{"stop a", "stop b", "grow", "start a", "start b"}, ""},
		{"", "no space", []string{"stop a", "stop b", "grow", "start a", "start b"}, "no space"},
		{"b", "", []string{"stop a", "stop b", "start a"}, "stop b failed"},
	} {
		calls, err := run(c.stopFails, c.growFails)
		if !reflect.DeepEqual(calls, c.want) || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) {
			t.Errorf("stop fails %q, grow fails %q: %v, %v; want %v, %q", c.stopFails, c.growFails, calls, err, c.want, c.err)
		}
	}
	var calls []string
	if err := growStopped(nil, func(string) error { return nil }, func() error { calls = append(calls, "grow"); return nil },
		func(string) error { return nil }); err != nil || !reflect.DeepEqual(calls, []string{"grow"}) {
		t.Errorf("a disk of no running domain is grown at once: %v %v", calls, err)
	}
}

// A guest early in its boot ignores the first asks; shutDownWithin asks again until one takes, within
// the grace, and gives up (false) when none does.
func TestShutDownWithinAsksAgain(t *testing.T) {
	asks, offAfter := 0, 3
	ask := func() error { asks++; return nil }
	off := func(time.Duration) (bool, error) { return asks >= offAfter, nil }
	done, err := shutDownWithin(context.Background(), time.Second, 10*time.Millisecond, ask, off)
	if !done || err != nil || asks != offAfter {
		t.Errorf("shutDownWithin = %v, %v after %d asks, want off after %d", done, err, asks, offAfter)
	}
	asks, offAfter = 0, 1<<30
	start := time.Now()
	done, err = shutDownWithin(context.Background(), 100*time.Millisecond, 10*time.Millisecond, ask,
		func(d time.Duration) (bool, error) { time.Sleep(d); return false, nil })
	if done || err != nil || asks < 2 || time.Since(start) > time.Second {
		t.Errorf("never off: %v, %v after %d asks in %s", done, err, asks, time.Since(start))
	}
	// an ask that blocks (an agent call) does not hold the loop past the grace
	block := make(chan struct{})
	defer close(block)
	start = time.Now()
	done, _ = shutDownWithin(context.Background(), 100*time.Millisecond, 20*time.Millisecond,
		func() error { <-block; return nil }, func(time.Duration) (bool, error) { return false, nil })
	if done || time.Since(start) > time.Second {
		t.Errorf("a blocking ask: %v after %s", done, time.Since(start))
	}
}

// A domain a disk grow left stopped is claimed once by its update (which starts it); nobody else then.
func TestLeftOffIsClaimedOnce(t *testing.T) {
	id := libvirt.UUID{1, 2, 3}
	startLater(nil, libvirt.Domain{UUID: id}, time.Hour) // never fires here: claimed below
	if !claimLeftOff(id) || claimLeftOff(id) {
		t.Error("a left-off domain is claimed exactly once")
	}
	if claimLeftOff(libvirt.UUID{9}) {
		t.Error("a domain no grow left off is not claimed")
	}
}
