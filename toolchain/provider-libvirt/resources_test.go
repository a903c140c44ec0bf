package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	// A local path, a file:// URL and an http(s) URL, streamed with their size and format.
	for src, want := range map[string]string{qcow: "qcow2", "file://" + qcow: "qcow2", raw: "raw", srv.URL + "/disk.qcow2": "qcow2"} {
		s, err := openSource(context.Background(), src)
		if err != nil {
			t.Fatalf("openSource(%s): %v", src, err)
		}
		body, _ := io.ReadAll(s)
		if s.format != want || int64(len(body)) != s.size || s.close() != nil {
			t.Errorf("openSource(%s): format %q size %d, read %d", src, s.format, s.size, len(body))
		}
	}
	for _, bad := range []string{srv.URL + "/missing", "ftp://example/x", filepath.Join(dir, "none")} {
		if _, err := openSource(context.Background(), bad); err == nil {
			t.Errorf("openSource(%s) must fail", bad)
		}
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
