// go-libp2p test peer for the interop contract in ../CONTRACT.md.
// NDJSON on stdout, logs on stderr.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"math"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

const usage = `usage:
  peer listen [--listen MA]... [--key FILE] [--relay RELAY_MA] [--holepunch]
  peer dial TARGET_MA --steps STEP[,STEP...] [--key FILE] [--listen MA]... [--holepunch]
  peer relay [--host H] [--port P] [--key FILE] [--unlimited] [--limit-duration S] [--limit-data B]`

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// opts holds the parsed command line: values by flag name, plus positionals.
type opts struct {
	role       string
	positional []string
	listen     []string
	values     map[string]string
	bools      map[string]bool
}

// flag kinds per role: "v" takes a value, "l" a repeatable value, "b" is a switch.
var flagSpec = map[string]map[string]string{
	"listen": {"listen": "l", "key": "v", "relay": "v", "holepunch": "b"},
	"dial":   {"steps": "v", "key": "v", "listen": "l", "holepunch": "b"},
	"relay":  {"host": "v", "port": "v", "key": "v", "unlimited": "b", "limit-duration": "v", "limit-data": "v"},
}

func parseArgs(argv []string) (*opts, error) {
	if len(argv) == 0 {
		return nil, usageError{"missing role"}
	}
	o := &opts{role: argv[0], values: map[string]string{}, bools: map[string]bool{}}
	spec, ok := flagSpec[o.role]
	if !ok {
		return nil, usageError{fmt.Sprintf("unknown role %q", o.role)}
	}
	rest := argv[1:]
	for i := 0; i < len(rest); i++ {
		arg := rest[i]
		if !strings.HasPrefix(arg, "--") {
			o.positional = append(o.positional, arg)
			continue
		}
		name, value, hasValue := strings.Cut(arg[2:], "=")
		kind, ok := spec[name]
		if !ok {
			return nil, usageError{fmt.Sprintf("unknown option --%s for %s", name, o.role)}
		}
		if kind == "b" {
			o.bools[name] = true
			continue
		}
		if !hasValue {
			if i+1 >= len(rest) {
				return nil, usageError{fmt.Sprintf("--%s needs a value", name)}
			}
			i++
			value = rest[i]
		}
		if kind == "l" {
			o.listen = append(o.listen, value)
		} else {
			o.values[name] = value
		}
	}
	want := 0
	if o.role == "dial" {
		want = 1
		if _, ok := o.values["steps"]; !ok {
			return nil, usageError{"dial needs --steps"}
		}
	}
	if len(o.positional) != want {
		return nil, usageError{fmt.Sprintf("%s takes %d positional argument(s)", o.role, want)}
	}
	for _, name := range []string{"port", "limit-duration", "limit-data"} {
		if v, ok := o.values[name]; ok {
			if _, err := strconv.ParseUint(v, 10, 63); err != nil {
				return nil, usageError{fmt.Sprintf("--%s must be a non-negative integer", name)}
			}
		}
	}
	for _, s := range append(append([]string{}, o.listen...), o.values["relay"], strings.Join(o.positional, "")) {
		if s == "" {
			continue
		}
		if _, err := ma.NewMultiaddr(s); err != nil {
			return nil, usageError{fmt.Sprintf("bad multiaddr %q: %v", s, err)}
		}
	}
	return o, nil
}

func emit(v any) {
	b, _ := json.Marshal(v)
	os.Stdout.Write(append(b, '\n'))
}

// loadKey reads a protobuf-encoded PrivateKey, creating an Ed25519 one (0600) if missing.
func loadKey(path string) (crypto.PrivKey, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err == nil {
			return crypto.UnmarshalPrivateKey(b)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil || path == "" {
		return key, err
	}
	b, err := crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return key, os.WriteFile(path, b, 0o600)
}

func agentVersion() string {
	v := "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "github.com/libp2p/go-libp2p" {
				v = d.Version
			}
		}
	}
	return "peerup-interop-go (go-libp2p " + v + ")"
}

// newHost builds a TCP + Noise + Yamux host with infinite resource limits and the
// circuit v2 client transport (needed to dial and accept /p2p-circuit connections).
func newHost(key crypto.PrivKey, listen []string, holepunch bool) (host.Host, error) {
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		return nil, err
	}
	options := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.NoTransports,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(connmgr.NullConnMgr{}),
		libp2p.EnableRelay(), // circuit v2 client transport only; no relay service, no autorelay
		libp2p.Ping(true),
		libp2p.DisableMetrics(),
		libp2p.UserAgent(agentVersion()),
	}
	if len(listen) == 0 {
		options = append(options, libp2p.NoListenAddrs)
	} else {
		options = append(options, libp2p.ListenAddrStrings(listen...))
	}
	if holepunch {
		labAddressesArePublic()
		options = append(options, libp2p.EnableHolePunching())
	}
	return libp2p.New(options...)
}

// labAddressesArePublic lets go-libp2p take the NAT lab's "internet" (the documentation
// ranges 198.51.100.0/24 and 203.0.113.0/24, see ../../shared/natlab) for public
// addresses: its hole punching offers and dials public addresses only.
func labAddressesArePublic() {
	manet.Unroutable4 = slices.DeleteFunc(manet.Unroutable4, func(n *net.IPNet) bool {
		s := n.String()
		return s == "198.51.100.0/24" || s == "203.0.113.0/24"
	})
}

// waitHolePunching waits until the hole punching service serves /libp2p/dcutr, which it
// does once the host knows a public address of its own (observed through the relay).
func waitHolePunching(ctx context.Context, h host.Host) error {
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(h.Mux().Protocols(), "/libp2p/dcutr") {
		if time.Now().After(deadline) {
			return errors.New("hole punching did not start in 20 s (no public address observed)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// addrs lists the host's own addresses with /p2p/<id>, skipping the bare /p2p-circuit listener.
func addrs(h host.Host) []string {
	var out []string
	for _, a := range h.Addrs() {
		if _, err := a.ValueForProtocol(ma.P_CIRCUIT); err == nil {
			continue
		}
		out = append(out, a.String()+"/p2p/"+h.ID().String())
	}
	return out
}

func ready(h host.Host, main string, all []string) {
	if main == "" && len(all) > 0 {
		main = all[0]
	}
	out := &fields{}
	out.set("event", "ready")
	out.set("peer_id", h.ID().String())
	out.set("multiaddr", main)
	out.set("multiaddrs", all)
	emit(out)
}

func runListen(ctx context.Context, o *opts, key crypto.PrivKey) error {
	listen := o.listen
	if len(listen) == 0 {
		listen = []string{"/ip4/127.0.0.1/tcp/0"}
	}
	var relayInfo *peer.AddrInfo
	if s := o.values["relay"]; s != "" {
		info, err := peer.AddrInfoFromString(s)
		if err != nil {
			return usageError{"--relay needs a multiaddr ending in /p2p/<relay id>: " + err.Error()}
		}
		relayInfo = info
	}
	h, err := newHost(key, listen, o.bools["holepunch"])
	if err != nil {
		return err
	}
	defer h.Close()
	serveProtocols(h)
	all := addrs(h)
	main := ""
	if relayInfo != nil {
		rsvp, err := reserve(ctx, h, *relayInfo)
		if err != nil {
			return err
		}
		main = o.values["relay"] + "/p2p-circuit/p2p/" + h.ID().String()
		all = append([]string{main}, all...)
		go keepReservation(ctx, h, *relayInfo, rsvp)
		if o.bools["holepunch"] {
			if err := waitHolePunching(ctx, h); err != nil {
				return err
			}
		}
	}
	ready(h, main, all)
	<-ctx.Done()
	return nil
}

func reserve(ctx context.Context, h host.Host, info peer.AddrInfo) (*client.Reservation, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := h.Connect(ctx, info); err != nil {
		return nil, fmt.Errorf("connecting to relay: %w", err)
	}
	rsvp, err := client.Reserve(ctx, h, info)
	if err != nil {
		return nil, fmt.Errorf("relay reservation: %w", err)
	}
	log.Printf("reserved on relay %s until %s (limit: %s, %d bytes)", info.ID, rsvp.Expiration, rsvp.LimitDuration, rsvp.LimitData)
	return rsvp, nil
}

// keepReservation refreshes the reservation a minute before it expires.
func keepReservation(ctx context.Context, h host.Host, info peer.AddrInfo, rsvp *client.Reservation) {
	for {
		wait := time.Until(rsvp.Expiration) - time.Minute
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 5*time.Second)):
		}
		if next, err := reserve(ctx, h, info); err != nil {
			log.Printf("refreshing reservation failed: %v", err)
		} else {
			rsvp = next
		}
	}
}

func runRelay(ctx context.Context, o *opts, key crypto.PrivKey) error {
	hostname, port := o.values["host"], o.values["port"]
	if hostname == "" {
		hostname = "127.0.0.1"
	}
	if port == "" {
		port = "0"
	}
	ipv := "ip4"
	if strings.Contains(hostname, ":") {
		ipv = "ip6"
	}
	h, err := newHost(key, []string{fmt.Sprintf("/%s/%s/tcp/%s", ipv, hostname, port)}, false)
	if err != nil {
		return err
	}
	defer h.Close()
	// Advertise every relay address in reservations (the default keeps public ones only).
	relayOpts := []relay.Option{relay.WithReservationAddressFilter(func(ma.Multiaddr) bool { return true })}
	duration, hasDuration := o.values["limit-duration"]
	data, hasData := o.values["limit-data"]
	if o.bools["unlimited"] || hasDuration || hasData {
		const many = 1 << 30
		rc := relay.DefaultResources()
		rc.MaxReservations, rc.MaxCircuits = many, many
		rc.MaxReservationsPerPeer, rc.MaxReservationsPerIP, rc.MaxReservationsPerASN = many, many, many
		rc.BufferSize = 64 << 10 // copy buffer per direction (default 2 KiB)
		rc.Limit = nil
		if hasDuration || hasData {
			// go-libp2p always enforces (and announces) both: "unset" becomes effectively infinite.
			rc.Limit = &relay.RelayLimit{Duration: math.MaxUint32 * time.Second, Data: math.MaxInt64}
			if hasDuration {
				s, _ := strconv.ParseInt(duration, 10, 64)
				rc.Limit.Duration = time.Duration(s) * time.Second
			}
			if hasData {
				rc.Limit.Data, _ = strconv.ParseInt(data, 10, 64)
			}
		}
		relayOpts = append(relayOpts, relay.WithResources(rc))
	}
	svc, err := relay.New(h, relayOpts...)
	if err != nil {
		return err
	}
	defer svc.Close()
	serveProtocols(h)
	ready(h, "", addrs(h))
	<-ctx.Done()
	return nil
}

func main() {
	log.SetOutput(os.Stderr)
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	o, err := parseArgs(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n%s\n", err, usage)
		os.Exit(2)
	}
	var steps []step
	if o.role == "dial" {
		if steps, err = parseSteps(o.values["steps"]); err != nil {
			fmt.Fprintf(os.Stderr, "%v\n%s\n", err, usage)
			os.Exit(2)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	key, err := loadKey(o.values["key"])
	if err != nil {
		log.Printf("key: %v", err)
		os.Exit(1)
	}
	switch o.role {
	case "listen":
		err = runListen(ctx, o, key)
	case "relay":
		err = runRelay(ctx, o, key)
	case "dial":
		var ok bool
		ok, err = runDial(ctx, o.positional[0], steps, key, o.listen, o.bools["holepunch"])
		if err == nil && !ok && ctx.Err() == nil {
			os.Exit(1)
		}
	}
	if err != nil && ctx.Err() == nil { // a SIGTERM'd peer exits 0, whatever it was doing
		log.Printf("%s failed: %v", o.role, err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
	log.Printf("%s: stopped", o.role)
}

// allowLimited lets streams run over limited (relayed) connections.
func allowLimited(ctx context.Context) context.Context {
	return network.WithAllowLimitedConn(ctx, "interop")
}
