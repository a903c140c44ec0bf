// Command pulumi-resource-libvirt is the hacluster project's own implementation of the subset of
// the Pulumi libvirt provider that the PyPI SDK pulumi_libvirt==0.5.4 exposes and the program uses.
//
// Why: the upstream provider (github.com/pulumi/pulumi-libvirt/provider, a Terraform bridge over
// terraform-provider-libvirt v0.8.1) is refused by the Go module proxy here (HTTP 403). This one
// speaks the resource-provider gRPC contract of github.com/pulumi/pulumi/sdk/v3 and is built on
// what upstream is built on: github.com/digitalocean/go-libvirt (libvirt's RPC protocol, one
// connection per provider process, see conn.go) and libvirt.org/go/libvirtxml. It runs `mkisofs`
// for cloud-init seeds and `xsltproc` for the `xml.xslt` hook, as upstream does.
//
// Resources and inputs: the structs of args.go (Check refuses anything else, with a message);
// GetSchema serves them (schema.go), named and typed as in the SDK.
//
// Every object is marked refresh-before-update, so each `pulumi up` reads it from libvirt first and
// repairs what changed out of band (upstream does not: there only `up --refresh` does).
//
// Semantics: ids are domain, network and pool UUIDs, the volume key, and CloudInitDisk "key;uuid", as
// upstream. Domains, networks and pools get a UUID derived from the stack and their name (the stack's
// marker): Create adopts a same-named object that carries it, left by a `pulumi up` killed during its
// Create, and refuses, with the virsh command that removes it, one that does not (adopt.go). Read reports what libvirt holds (so `pulumi refresh` shows drift, and a deleted object
// leaves the state). Update changes in place, beyond upstream: a domain's running and autostart (a
// stopped domain is started again, same UUID), its vcpu and memory (redefined from its own definition,
// same UUID, MACs and disks, and restarted cleanly when it runs), a seed's user-data (rewritten at the
// same path for the node's next fresh boot), a network's autostart and DHCP (and it starts an inactive
// network), a volume's size when it grows (same key and path: a running domain that has it as a disk is
// shut down cleanly, the volume grown, the domain started again; a shrink is refused, and so is an
// overlay smaller than its base; the program refuses both at preview already). Any other change
// replaces the object: the old one first when the new one has the same libvirt name, else the new one
// beside it (a new base image stays until no overlay uses it: deleting a volume that is another's
// backing store is refused). Stopping a running domain (delete, restart,
// running=false) asks the guest to shut down, through its agent or else by ACPI, and powers it off
// after PULUMI_LIBVIRT_SHUTDOWN_GRACE seconds (default 30; 0 = at once). The stack's pool directory is
// 0711 and every volume 0600 (seeds hold secrets). Deleting what is already gone succeeds. Not
// implemented: preview of Create (SupportsPreview false), data sources (Invoke).
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	pbempty "google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// version is stamped by toolchain/build.sh (-X main.version=...); it must match the SDK's
// pulumi-plugin.json (0.5.4), or the engine looks for another plugin.
var version = "0.5.4"

const defaultURI = "qemu:///system"

func main() {
	err := provider.Main("libvirt", func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return newProvider(host), nil
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-libvirt: %v\n", err)
		os.Exit(1)
	}
}

type libvirtProvider struct {
	pulumirpc.UnimplementedResourceProviderServer

	host  *provider.HostClient
	mu    sync.Mutex
	uri   string
	conn  *libvirt.Libvirt // opened on first use, reopened only when it dropped
	dials int              // connections opened (tests)
}

func newProvider(host *provider.HostClient) *libvirtProvider {
	if s := os.Getenv("PULUMI_LIBVIRT_SHUTDOWN_GRACE"); s != "" { // seconds; 0: hard power-off at once
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			shutdownGrace = time.Duration(n) * time.Second
		}
	}
	return &libvirtProvider{host: host, uri: cmp.Or(os.Getenv("LIBVIRT_DEFAULT_URI"), defaultURI)}
}

// op gives a call the provider's one libvirt connection.
func (p *libvirtProvider) op(urn string) (*op, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil || !p.conn.IsConnected() {
		l, err := dial(p.uri)
		if err != nil {
			return nil, err
		}
		p.conn, p.dials = l, p.dials+1
	}
	return &op{p: p, l: p.conn, urn: urn}, nil
}

// ---- plugin and provider configuration ----------------------------------------------------------

func (p *libvirtProvider) GetPluginInfo(context.Context, *pbempty.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (p *libvirtProvider) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	schema, err := json.Marshal(packageSchema())
	return &pulumirpc.GetSchemaResponse{Schema: string(schema)}, err
}

func (p *libvirtProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	if v, ok := news["uri"]; ok && v.IsString() && v.StringValue() == "" {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "uri", Reason: "uri must not be empty"})
	}
	inputs, err := marshal(news)
	return &pulumirpc.CheckResponse{Inputs: inputs, Failures: failures}, err
}

func (p *libvirtProvider) DiffConfig(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	m, err := unmarshalAll(oldInputsOf(req), req.GetNews())
	if err != nil {
		return nil, err
	}
	uri := func(m resource.PropertyMap) resource.PropertyMap {
		if m["uri"].IsNull() {
			return resource.PropertyMap{"uri": resource.NewStringProperty(defaultURI)}
		}
		return resource.PropertyMap{"uri": m["uri"]}
	}
	if changedKeys(uri(m[0]), uri(m[1]), nil) == nil {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
	}
	// Another hypervisor: the objects of the old one are not the new one's.
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_SOME,
		Replaces: []string{"uri"}, Diffs: []string{"uri"}}, nil
}

// oldInputsOf: the old inputs, or for old engines that send none, the old outputs.
func oldInputsOf(req *pulumirpc.DiffRequest) *structpb.Struct {
	if req.GetOldInputs() != nil {
		return req.GetOldInputs()
	}
	return req.GetOlds()
}

func (p *libvirtProvider) Configure(_ context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	uri := req.GetVariables()["libvirt:config:uri"]
	if req.GetArgs() != nil {
		args, err := unmarshal(req.GetArgs())
		if err != nil {
			return nil, err
		}
		if v := stripSecrets(args["uri"]); v.IsString() {
			uri = v.StringValue()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if uri != "" && uri != p.uri {
		p.uri = uri
		if p.conn != nil { // opened for another URI: the next call dials this one
			_ = p.conn.Disconnect()
			p.conn = nil
		}
	}
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: false}, nil
}

func (p *libvirtProvider) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, status.Errorf(codes.Unimplemented,
		"%s is not implemented by this pulumi-resource-libvirt (hacluster's own subset: resources only)", req.GetTok())
}

// ---- resources ----------------------------------------------------------------------------------

func (p *libvirtProvider) kindOf(urn string) (*kind, error) {
	typ := string(resource.URN(urn).Type())
	if k, ok := kinds[typ]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("resource type %s is not implemented by this pulumi-resource-libvirt "+
		"(hacluster's own subset: %s)", typ, strings.Join(slices.Sorted(maps.Keys(kinds)), ", "))
}

func (p *libvirtProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	k, err := p.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	for key, def := range k.defaults {
		if news[resource.PropertyKey(key)].IsNull() { // absent or null (an unknown stays unknown)
			news[resource.PropertyKey(key)] = def
		}
	}
	var failures []*pulumirpc.CheckFailure
	args := k.newArgs()
	if f := decodeArgs(news, args); f != nil {
		failures = append(failures, f)
	} else {
		for _, key := range k.required {
			if v, ok := news[resource.PropertyKey(key)]; !ok || v.IsNull() {
				failures = append(failures, &pulumirpc.CheckFailure{Property: key, Reason: key + " is required"})
			}
		}
		// Semantic checks need every value: with unknowns (preview) Create checks again.
		if len(failures) == 0 && !news.ContainsUnknowns() && k.validate != nil {
			if err := k.validate(args); err != nil {
				failures = append(failures, &pulumirpc.CheckFailure{Reason: err.Error()})
			}
		}
	}
	inputs, err := marshal(news)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs, Failures: failures}, nil
}

func (p *libvirtProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	k, err := p.kindOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	m, err := unmarshalAll(oldInputsOf(req), req.GetNews())
	if err != nil {
		return nil, err
	}
	olds, news := m[0], m[1]
	changed := changedKeys(olds, news, req.GetIgnoreChanges())
	if len(changed) == 0 {
		return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
	}
	var replaces []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, key := range changed {
		kind := pulumirpc.PropertyDiff_UPDATE
		if olds[resource.PropertyKey(key)].IsNull() {
			kind = pulumirpc.PropertyDiff_ADD
		} else if news[resource.PropertyKey(key)].IsNull() {
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if !slices.Contains(k.inPlace, key) {
			kind++ // ADD_REPLACE, DELETE_REPLACE, UPDATE_REPLACE follow ADD, DELETE, UPDATE
			replaces = append(replaces, key)
		}
		detailed[key] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	// libvirt object names (and paths, subnets, MACs) are unique: the old one goes first, unless the
	// replacement has a name of its own (kind.identity).
	renamed := slices.ContainsFunc(k.identity, func(key string) bool {
		v := news[resource.PropertyKey(key)]
		return slices.Contains(changed, key) && !v.IsNull() && !v.ContainsUnknowns()
	})
	return &pulumirpc.DiffResponse{
		Changes: pulumirpc.DiffResponse_DIFF_SOME, Replaces: replaces, Diffs: changed,
		DeleteBeforeReplace: len(replaces) > 0 && !renamed, DetailedDiff: detailed, HasDetailedDiff: true,
	}, nil
}

func (p *libvirtProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	k, o, err := p.begin(req.GetUrn())
	if err != nil {
		return nil, err
	}
	inputs, err := unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if inputs.ContainsUnknowns() {
		return nil, fmt.Errorf("%s: Create with unknown inputs (preview is not supported)", req.GetUrn())
	}
	args, err := k.decode(inputs)
	if err != nil {
		return nil, err
	}
	var id string
	var extra resource.PropertyMap
	var found bool
	if k.adopt != nil { // a same-named object left by an interrupted `pulumi up` (adopt.go)
		id, extra, found, err = k.adopt(ctx, o, args)
	}
	if err == nil && !found {
		id, extra, err = k.create(ctx, o, args)
	}
	if err != nil {
		return nil, err
	}
	outs := inputs.Copy()
	for key, v := range extra {
		outs[key] = fill(outs[key], v)
	}
	props, err := marshal(k.secret(outs))
	return &pulumirpc.CreateResponse{Id: id, Properties: props, RefreshBeforeUpdate: true}, err
}

// begin resolves a request's resource kind and opens (or reuses) the libvirt connection.
func (p *libvirtProvider) begin(urn string) (*kind, *op, error) {
	k, err := p.kindOf(urn)
	if err != nil {
		return nil, nil, err
	}
	o, err := p.op(urn)
	return k, o, err
}

// Read reports the object as libvirt holds it: over the stored inputs and outputs (refresh), or
// whole (import, which has none).
func (p *libvirtProvider) Read(ctx context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	k, o, err := p.begin(req.GetUrn())
	if err != nil || req.GetId() == "" {
		return &pulumirpc.ReadResponse{}, err
	}
	m, err := unmarshalAll(req.GetInputs(), req.GetProperties())
	if err != nil {
		return nil, err
	}
	seen, err := k.read(ctx, o, req.GetId(), m[0])
	if err != nil || seen == nil {
		return &pulumirpc.ReadResponse{}, err // gone: refresh drops it from the state
	}
	inputs, outs := seen, seen.Copy()
	if len(m[0]) > 0 {
		inputs, outs = overlay(m[0], seen), overlay(m[1], seen)
	}
	in, err := marshal(inputs)
	if err != nil {
		return nil, err
	}
	props, err := marshal(k.secret(outs))
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: props, Inputs: in, RefreshBeforeUpdate: true}, err
}

// decode gives the args struct of known, checked inputs (Check has validated them already, unless
// they held unknowns then).
func (k *kind) decode(inputs resource.PropertyMap) (any, error) {
	args := k.newArgs()
	if f := decodeArgs(inputs, args); f != nil {
		return nil, fmt.Errorf("%s: %s", f.Property, f.Reason)
	}
	if k.validate != nil {
		return args, k.validate(args)
	}
	return args, nil
}

// secret marks the outputs that are always secret.
func (k *kind) secret(outs resource.PropertyMap) resource.PropertyMap {
	for _, key := range k.secretOutputs {
		if v, ok := outs[resource.PropertyKey(key)]; ok && !v.IsNull() && !v.IsSecret() {
			outs[resource.PropertyKey(key)] = resource.MakeSecret(v)
		}
	}
	return outs
}

// Update changes the in-place inputs (Diff sends nothing else here).
func (p *libvirtProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	k, o, err := p.begin(req.GetUrn())
	if err != nil {
		return nil, err
	}
	m, err := unmarshalAll(req.GetOldInputs(), req.GetOlds(), req.GetNews())
	if err != nil {
		return nil, err
	}
	olds, outs, news := m[0], m[1], m[2]
	args, err := k.decode(news)
	if err != nil {
		return nil, err
	}
	changed := changedKeys(olds, news, req.GetIgnoreChanges())
	if k.update == nil {
		return nil, fmt.Errorf("%s: no in-place update for %v", req.GetUrn(), changed)
	}
	if err := k.update(ctx, o, req.GetId(), args, changed); err != nil {
		return nil, err
	}
	for _, key := range changed {
		outs[resource.PropertyKey(key)] = news[resource.PropertyKey(key)]
	}
	props, err := marshal(k.secret(outs))
	return &pulumirpc.UpdateResponse{Properties: props, RefreshBeforeUpdate: true}, err
}

func (p *libvirtProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*pbempty.Empty, error) {
	k, o, err := p.begin(req.GetUrn())
	if err == nil && req.GetId() != "" {
		err = k.delete(ctx, o, req.GetId())
	}
	return &pbempty.Empty{}, err
}
