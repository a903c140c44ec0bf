package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
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
