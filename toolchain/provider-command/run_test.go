package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{emit: func(l string) { got = append(got, l) }}
	for _, chunk := range []string{"a\r\nb", "c\n\nd"} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	if want := []string{"a", "bc", "", "d"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
	if w.all.String() != "a\r\nbc\n\nd" {
		t.Fatalf("captured %q", w.all.String())
	}
}

func TestCleanOutput(t *testing.T) {
	for in, want := range map[string]string{"x\n": "x", "x\n\n": "x\n", "x": "x", "": "", "\xff\n": "\uFFFD"} {
		if got := cleanOutput(in); got != want {
			t.Errorf("cleanOutput(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMasker(t *testing.T) {
	m := newMasker([]string{"abc", "longsecret", "-----BEGIN KEY-----\nAAAABBBB\n-----END KEY-----\n"})
	got := m.mask("abc longsecret AAAABBBB")
	if got != "abc [secret] [secret]" {
		t.Fatalf("mask: %q", got)
	}
}

func TestTailLines(t *testing.T) {
	lines, omitted := tailLines(strings.Repeat("x\n", 25), 20)
	if len(lines) != 20 || omitted != 5 {
		t.Fatalf("%d %d", len(lines), omitted)
	}
	lines, omitted = tailLines("a\nb", 20)
	if len(lines) != 2 || omitted != 0 {
		t.Fatalf("%v %d", lines, omitted)
	}
}
