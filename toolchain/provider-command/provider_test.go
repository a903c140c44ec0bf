package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

const testURN = "urn:pulumi:dev::proj::command:local:Command::c"

// testProvider records what would be logged to the engine.
type testProvider struct {
	*commandProvider
	mu    sync.Mutex
	lines []string
}

func newTestProvider() *testProvider {
	tp := &testProvider{commandProvider: newProvider(nil)}
	tp.environ = func() []string { return []string{"PATH=" + os.Getenv("PATH")} }
	tp.log = func(urn, line string) {
		tp.mu.Lock()
		defer tp.mu.Unlock()
		if urn != testURN {
			panic("wrong urn " + urn)
		}
		tp.lines = append(tp.lines, line)
	}
	return tp
}

func (tp *testProvider) logged() string {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return strings.Join(tp.lines, "\n")
}

func mustMarshal(t *testing.T, m resource.PropertyMap) *structpb.Struct {
	t.Helper()
	s, err := marshal(m, "test")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustUnmarshal(t *testing.T, s *structpb.Struct) resource.PropertyMap {
	t.Helper()
	m, err := unmarshal(s, "test")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func create(t *testing.T, tp *testProvider, props resource.PropertyMap, preview bool) (resource.PropertyMap, error) {
	t.Helper()
	resp, err := tp.Create(context.Background(), &pulumirpc.CreateRequest{
		Urn: testURN, Type: localCommandType, Properties: mustMarshal(t, props), Preview: preview,
	})
	if err != nil {
		return nil, err
	}
	if preview != (resp.Id == "") {
		t.Fatalf("preview=%v id=%q", preview, resp.Id)
	}
	return mustUnmarshal(t, resp.Properties), nil
}

func TestCreateEchoesInputsAndCapturesOutput(t *testing.T) {
	tp := newTestProvider()
	dir := t.TempDir()
	props := resource.PropertyMap{
		"create":   str(`echo "out:$GREETING:$(pwd)"; echo err >&2; cat`),
		"dir":      str(dir),
		"stdin":    str("from stdin\n"),
		"triggers": list(str("a")),
		"environment": resource.NewObjectProperty(resource.PropertyMap{
			"GREETING": str("hello"),
		}),
	}
	outs, err := create(t, tp, props, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := outs["stdout"].StringValue(); got != "out:hello:"+dir+"\nfrom stdin" {
		t.Fatalf("stdout %q", got)
	}
	if got := outs["stderr"].StringValue(); got != "err" {
		t.Fatalf("stderr %q", got)
	}
	if !inputsOf(outs).DeepEquals(props) {
		t.Fatalf("inputs not echoed: %v", outs)
	}
	logged := tp.logged()
	for _, want := range []string{"out:hello:", "from stdin", "err"} {
		if !strings.Contains(logged, want) {
			t.Fatalf("log %q lacks %q", logged, want)
		}
	}
}

func TestSecretsStaySecretAndAreMasked(t *testing.T) {
	tp := newTestProvider()
	props := resource.PropertyMap{
		"create": str(`echo "token=$TOKEN"`),
		"environment": resource.NewObjectProperty(resource.PropertyMap{
			"TOKEN": secret(str("hunter22")), "PLAIN": str("p"),
		}),
	}
	outs, err := create(t, tp, props, false)
	if err != nil {
		t.Fatal(err)
	}
	env := outs["environment"].ObjectValue()
	if !env["TOKEN"].IsSecret() || env["PLAIN"].IsSecret() {
		t.Fatalf("environment secret-ness not preserved: %v", env)
	}
	if !outs["stdout"].IsSecret() || !outs["stderr"].IsSecret() {
		t.Fatalf("stdout/stderr should be secret when an input is: %v", outs)
	}
	if got := outs["stdout"].SecretValue().Element.StringValue(); got != "token=hunter22" {
		t.Fatalf("stdout %q", got)
	}
	if logged := tp.logged(); strings.Contains(logged, "hunter22") || !strings.Contains(logged, "token=[secret]") {
		t.Fatalf("log not masked: %q", logged)
	}
	// A non-secret command's outputs are plain.
	outs, err = create(t, tp, resource.PropertyMap{"create": str("echo x")}, false)
	if err != nil || outs["stdout"].IsSecret() {
		t.Fatalf("plain: %v %v", outs, err)
	}
}

func TestFailureReportsExitCodeAndTail(t *testing.T) {
	tp := newTestProvider()
	script := `for i in $(seq 1 30); do echo "line $i" >&2; done; echo "so long" ; echo "pw=$PW" >&2; exit 3`
	env := resource.NewObjectProperty(resource.PropertyMap{"PW": secret(str("topsecret"))})
	_, err := create(t, tp, resource.PropertyMap{"create": str(script), "environment": env}, false)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{"create command failed with exit code 3", "stderr (last 20 of 31 lines)",
		"line 30", "pw=[secret]", "stdout:", "so long"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "line 11\n") || strings.Contains(msg, "topsecret") {
		t.Errorf("error has too much:\n%s", msg)
	}
}

func TestLoggingModes(t *testing.T) {
	script := `echo OUT-TEXT; echo ERR-TEXT >&2; exit 4`
	for _, c := range []struct {
		mode             string
		showOut, showErr bool
	}{
		{"none", false, false}, {"stdout", true, false}, {"stderr", false, true}, {"stdoutAndStderr", true, true},
	} {
		tp := newTestProvider()
		_, err := create(t, tp, resource.PropertyMap{"create": str(script), "logging": str(c.mode)}, false)
		if err == nil || !strings.Contains(err.Error(), "exit code 4") {
			t.Fatalf("%s: err %v", c.mode, err)
		}
		for _, where := range []string{tp.logged(), err.Error()} {
			if strings.Contains(where, "OUT-TEXT") != c.showOut || strings.Contains(where, "ERR-TEXT") != c.showErr {
				t.Errorf("logging=%s shows wrong streams: %q", c.mode, where)
			}
		}
	}
}

func TestPreviewRunsNothing(t *testing.T) {
	tp := newTestProvider()
	marker := filepath.Join(t.TempDir(), "ran")
	props := resource.PropertyMap{"create": str("touch " + marker), "triggers": list(unknown())}
	outs, err := create(t, tp, props, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("preview ran the command")
	}
	if !outs["stdout"].IsComputed() || !outs["stderr"].IsComputed() || !outs["triggers"].ContainsUnknowns() {
		t.Fatalf("preview outputs: %v", outs)
	}
}

func TestUpdateAndDeleteSeePreviousOutput(t *testing.T) {
	tp := newTestProvider()
	file := filepath.Join(t.TempDir(), "deleted")
	olds := resource.PropertyMap{"create": str("echo first"), "stdout": str("first"), "stderr": str("e1")}
	news := resource.PropertyMap{
		"create": str("echo created"),
		"update": str(`echo "prev=$PULUMI_COMMAND_STDOUT/$PULUMI_COMMAND_STDERR"`),
		"delete": str(`echo "$PULUMI_COMMAND_STDOUT" > ` + file),
	}
	resp, err := tp.Update(context.Background(), &pulumirpc.UpdateRequest{
		Urn: testURN, Olds: mustMarshal(t, olds), News: mustMarshal(t, news),
	})
	if err != nil {
		t.Fatal(err)
	}
	outs := mustUnmarshal(t, resp.Properties)
	if got := outs["stdout"].StringValue(); got != "prev=first/e1" {
		t.Fatalf("update stdout %q", got)
	}

	// No `update`: `create` runs again; addPreviousOutputInEnv=false hides the previous output.
	news2 := resource.PropertyMap{"create": str(`echo "again:${PULUMI_COMMAND_STDOUT-unset}"`),
		"addPreviousOutputInEnv": resource.NewBoolProperty(false)}
	resp, err = tp.Update(context.Background(), &pulumirpc.UpdateRequest{
		Urn: testURN, Olds: mustMarshal(t, olds), News: mustMarshal(t, news2),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := mustUnmarshal(t, resp.Properties)["stdout"].StringValue(); got != "again:unset" {
		t.Fatalf("update without `update`: %q", got)
	}

	if _, err := tp.Delete(context.Background(), &pulumirpc.DeleteRequest{
		Urn: testURN, Properties: resp.Properties,
	}); err != nil {
		t.Fatalf("delete without `delete`: %v", err)
	}
	if _, err := tp.Delete(context.Background(), &pulumirpc.DeleteRequest{
		Urn: testURN, Properties: mustMarshal(t, outs),
	}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "prev=first/e1\n" {
		t.Fatalf("delete saw %q (%v)", b, err)
	}
}

func TestCancelKillsProcessGroup(t *testing.T) {
	tp := newTestProvider()
	errc := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := create(t, tp, resource.PropertyMap{"create": str("sleep 30 & sleep 30; wait")}, false)
		errc <- err
	}()
	for {
		tp.runner.mu.Lock()
		n := len(tp.runner.running)
		tp.runner.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := tp.Cancel(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err == nil || !strings.Contains(err.Error(), "canceled") {
			t.Fatalf("err %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("command still running 10 s after Cancel")
	}
	if time.Since(start) > 8*time.Second {
		t.Fatalf("cancel took %s", time.Since(start))
	}
	if _, err := create(t, tp, resource.PropertyMap{"create": str("true")}, false); err == nil {
		t.Fatal("a command ran after Cancel")
	}
}

// startCanceled runs command through Create, waits for it to create ready, then cancels the provider;
// it returns how long Create took after the Cancel, and its error.
func startCanceled(t *testing.T, tp *testProvider, command, ready string) (time.Duration, error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := create(t, tp, resource.PropertyMap{"create": str(command)}, false)
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not get ready within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	canceled := time.Now()
	if _, err := tp.Cancel(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		return time.Since(canceled), err
	case <-time.After(killGrace + 10*time.Second):
		t.Fatalf("command still running %s after Cancel", killGrace+10*time.Second)
	}
	return 0, nil
}

// A canceled command that cleans up on SIGTERM (the verifier restoring a drill) gets to finish: here
// its cleanup takes 4 s, longer than the old 3 s grace.
func TestCancelLetsTheCommandFinishItsCleanup(t *testing.T) {
	if killGrace < 30*time.Second {
		t.Fatalf("killGrace %s: shorter than the verifier's restore budget (20 s) plus margin", killGrace)
	}
	tp := newTestProvider()
	dir := t.TempDir()
	ready, restored := filepath.Join(dir, "ready"), filepath.Join(dir, "restored")
	cmd := "trap 'sleep 4; echo done > " + restored + "; exit 143' TERM; sleep 60 & echo > " + ready + "; wait"
	took, err := startCanceled(t, tp, cmd, ready)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("err %v", err)
	}
	if b, rerr := os.ReadFile(restored); rerr != nil || string(b) != "done\n" {
		t.Fatalf("the cleanup did not finish (%v %q): killed after %s", rerr, b, took)
	}
	if took < 4*time.Second || took > 15*time.Second {
		t.Fatalf("Create returned %s after Cancel; the cleanup takes 4 s", took)
	}
}

// A command that ignores SIGTERM is killed once the grace is over.
func TestCancelKillsAfterTheGrace(t *testing.T) {
	tp := newTestProvider()
	tp.runner.grace = time.Second
	ready := filepath.Join(t.TempDir(), "ready")
	took, err := startCanceled(t, tp, "trap '' TERM; echo > "+ready+"; sleep 60", ready)
	if err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("err %v", err)
	}
	if took < time.Second || took > 8*time.Second {
		t.Fatalf("Create returned %s after Cancel with a 1 s grace", took)
	}
}

func TestTimeout(t *testing.T) {
	tp := newTestProvider()
	_, err := tp.Create(context.Background(), &pulumirpc.CreateRequest{
		Urn: testURN, Properties: mustMarshal(t, resource.PropertyMap{"create": str("sleep 20")}), Timeout: 0.3,
	})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err %v", err)
	}
}

func TestOtherTypesRejected(t *testing.T) {
	tp := newTestProvider()
	_, err := tp.Check(context.Background(), &pulumirpc.CheckRequest{
		Urn: "urn:pulumi:dev::proj::command:remote:Command::r", News: mustMarshal(t, resource.PropertyMap{}),
	})
	if err == nil || !strings.Contains(err.Error(), "not implemented by hacluster's command provider") {
		t.Fatalf("err %v", err)
	}
	if _, err := tp.Invoke(context.Background(), &pulumirpc.InvokeRequest{Tok: "command:local:run"}); err == nil {
		t.Fatal("invoke accepted")
	}
}

func TestStartFailure(t *testing.T) {
	tp := newTestProvider()
	_, err := create(t, tp, resource.PropertyMap{"create": str("true"), "dir": str("/nonexistent/dir")}, false)
	if err == nil || !strings.Contains(err.Error(), "could not start") {
		t.Fatalf("err %v", err)
	}
}
