package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestFetchSourceAndDetectFormat(t *testing.T) {
	dir := t.TempDir()
	qcow := filepath.Join(dir, "disk.qcow2")
	if err := os.WriteFile(qcow, []byte("QFI\xfb\x00\x00\x00\x03rest"), 0o644); err != nil {
		t.Fatal(err)
	}
	raw := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(raw, []byte("MZ kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{qcow: "qcow2", raw: "raw"} {
		if got, err := detectFormat(path); err != nil || got != want {
			t.Errorf("detectFormat(%s) = %q, %v; want %q", path, got, err, want)
		}
	}

	// A local path and a file:// URL are used in place.
	for _, src := range []string{qcow, "file://" + qcow} {
		p, cleanup, err := fetchSource(context.Background(), src)
		if err != nil || p != qcow {
			t.Errorf("fetchSource(%s) = %q, %v", src, p, err)
		}
		cleanup()
	}

	// An http(s) URL is downloaded to a temporary file, removed by cleanup.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/disk.qcow2" {
			http.NotFound(w, r)
			return
		}
		http.ServeFile(w, r, qcow)
	}))
	defer srv.Close()
	p, cleanup, err := fetchSource(context.Background(), srv.URL+"/disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := detectFormat(p); f != "qcow2" {
		t.Errorf("downloaded file: format %q", f)
	}
	cleanup()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("download not cleaned up: %v", err)
	}
	if _, _, err := fetchSource(context.Background(), srv.URL+"/missing"); err == nil {
		t.Error("HTTP 404 must be an error")
	}
	if _, _, err := fetchSource(context.Background(), "ftp://example/x"); err == nil {
		t.Error("unsupported scheme must be an error")
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
