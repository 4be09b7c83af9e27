package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"
)

const stepTimeout = 120 * time.Second

type step struct {
	name string
	args []int64
}

func parseSteps(text string) ([]step, error) {
	arity := map[string]int{"echo": 1, "sink": 1, "source": 1, "latency": 1, "ping": 1, "concurrent": 2, "pause": 2, "identify": 0, "direct": 1}
	var steps []step
	for _, spec := range strings.Split(text, ",") {
		if spec == "" {
			continue
		}
		parts := strings.Split(spec, ":")
		n, ok := arity[parts[0]]
		if !ok {
			return nil, usageError{fmt.Sprintf("unknown step %q", parts[0])}
		}
		if len(parts)-1 != n {
			return nil, usageError{fmt.Sprintf("step %s takes %d argument(s)", parts[0], n)}
		}
		st := step{name: parts[0]}
		for _, p := range parts[1:] {
			v, err := strconv.ParseInt(p, 10, 64)
			if err != nil || v < 0 {
				return nil, usageError{fmt.Sprintf("step %s: expected a non-negative integer, got %q", st.name, p)}
			}
			st.args = append(st.args, v)
		}
		steps = append(steps, st)
	}
	return steps, nil
}

// fields is a JSON object that keeps insertion order.
type fields struct {
	keys   []string
	values map[string]any
}

func (f *fields) set(k string, v any) {
	if f.values == nil {
		f.values = map[string]any{}
	}
	if _, ok := f.values[k]; !ok {
		f.keys = append(f.keys, k)
	}
	f.values[k] = v
}

func (f *fields) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range f.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(f.values[k])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func round3(x float64) float64   { return math.Round(x*1000) / 1000 }
func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }
func mbps(n int64, d time.Duration) float64 {
	return round3(float64(n) / 1e6 / d.Seconds())
}

func stats(samples []time.Duration) map[string]any {
	s := slices.Clone(samples)
	slices.Sort(s)
	at := func(q float64) float64 { return ms(s[max(0, int(math.Ceil(q*float64(len(s))))-1)]) }
	return map[string]any{"median_ms": at(0.5), "p90_ms": at(0.9), "min_ms": ms(s[0]), "samples": len(s)}
}

func runDial(ctx context.Context, target string, steps []step, key crypto.PrivKey, listen []string, holepunch bool) (bool, error) {
	info, err := peer.AddrInfoFromString(target)
	if err != nil {
		return false, usageError{"TARGET_MA must end in /p2p/<peer id>: " + err.Error()}
	}
	h, err := newHost(key, listen, holepunch)
	if err != nil {
		return false, err
	}
	defer func() {
		done := make(chan struct{})
		go func() { h.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
		}
	}()
	serveProtocols(h)
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		return false, err
	}
	defer sub.Close()

	res := &fields{}
	res.set("event", "result")
	res.set("ok", false)
	res.set("connect_ms", nil)
	res.set("relayed", strings.Contains(target, "/p2p-circuit"))
	res.set("encryption", "/noise")
	res.set("multiplexer", "/yamux/1.0.0")
	stepsOut := &fields{}
	res.set("steps", stepsOut)

	if holepunch {
		// Through the relay first, so that it observes our address and the hole
		// punching service starts before the target asks us to punch.
		if relayAddr, _ := ma.SplitFunc(info.Addrs[0], func(c ma.Component) bool { return c.Protocol().Code == ma.P_CIRCUIT }); relayAddr != nil {
			if relayInfo, err := peer.AddrInfoFromP2pAddr(relayAddr); err == nil {
				if err := h.Connect(ctx, *relayInfo); err != nil {
					return false, fmt.Errorf("connecting to the relay: %w", err)
				}
				if err := waitHolePunching(ctx, h); err != nil {
					return false, err
				}
			}
		}
	}
	t0 := time.Now()
	h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
	dctx, cancel := context.WithTimeout(allowLimited(ctx), 30*time.Second)
	conn, err := h.Network().DialPeer(dctx, info.ID)
	cancel()
	if err != nil {
		res.set("error", "dial: "+err.Error())
		emit(res)
		return false, nil
	}
	res.set("connect_ms", ms(time.Since(t0)))
	state := conn.ConnState()
	_, circuitErr := conn.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT)
	res.set("relayed", conn.Stat().Limited || circuitErr == nil)
	if state.Security != "" {
		res.set("encryption", string(state.Security))
	}
	if state.StreamMultiplexer != "" {
		res.set("multiplexer", string(state.StreamMultiplexer))
	}
	// Relayed conns report an empty ConnState, though they are upgraded with the same Noise + Yamux.
	log.Printf("connected to %s via %s (security %q, muxer %q, early muxer negotiation: %v, limited: %v)", info.ID,
		conn.RemoteMultiaddr(), state.Security, state.StreamMultiplexer, state.UsedEarlyMuxerNegotiation, conn.Stat().Limited)

	idh, _ := h.(interface{ IDService() identify.IDService })
	d := &dialer{ctx: ctx, h: idh, net: h.Network(), conn: conn, dialStart: t0, idEvents: sub.Out(), payloads: map[int64][]byte{}}
	ok := true
	for _, st := range steps {
		out := &fields{}
		stepsOut.set(st.name, out)
		if conn.IsClosed() {
			out.set("ok", false)
			out.set("error", "connection closed, step not run")
			ok = false
			continue
		}
		d.deadline = time.Now().Add(stepTimeout)
		r, err := d.run(st)
		if err != nil {
			ok = false
			msg := err.Error()
			if conn.IsClosed() {
				msg += " (connection closed)"
			}
			out.set("ok", false)
			out.set("error", msg)
			log.Printf("step %s failed: %v", st.name, err)
			continue
		}
		out.set("ok", true)
		for _, k := range r.keys {
			out.set(k, r.values[k])
		}
	}
	res.set("ok", ok)
	emit(res)
	return ok, nil
}

type dialer struct {
	ctx       context.Context
	h         interface{ IDService() identify.IDService }
	net       network.Network
	conn      network.Conn
	dialStart time.Time
	deadline  time.Time // of the current step
	idEvents  <-chan any
	identity  *event.EvtPeerIdentificationCompleted
	payloads  map[int64][]byte
	mu        sync.Mutex
}

func (d *dialer) payload(n int64) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.payloads[n] == nil {
		d.payloads[n] = pattern(n)
	}
	return d.payloads[n]
}

func (d *dialer) run(st step) (*fields, error) {
	a := st.args
	switch st.name {
	case "echo":
		return d.echo(a[0])
	case "sink":
		return d.sink(a[0])
	case "source":
		return d.source(a[0])
	case "latency":
		return d.latency(int(a[0]))
	case "ping":
		return d.ping(int(a[0]))
	case "concurrent":
		return d.concurrent(int(a[0]), a[1])
	case "pause":
		return d.pause(a[0], a[1])
	case "identify":
		return d.identify()
	case "direct":
		return d.direct(a[0])
	}
	return nil, fmt.Errorf("unknown step %q", st.name)
}

// open opens a stream on THE connection (limited ones allowed) and negotiates proto.
func (d *dialer) open(proto string) (network.Stream, error) {
	ctx, cancel := context.WithDeadline(allowLimited(d.ctx), d.deadline)
	defer cancel()
	s, err := d.conn.NewStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening stream: %w", err)
	}
	s.SetDeadline(d.deadline)
	if err := msmux.SelectProtoOrFail(proto, s); err != nil {
		s.Reset()
		return nil, fmt.Errorf("negotiating %s: %w", proto, err)
	}
	s.SetProtocol(protocol.ID(proto))
	return s, nil
}

// readExact reads the stream until EOF, checking it carries exactly `want`.
func readExact(s network.Stream, want []byte, onFirstByte func()) error {
	buf := make([]byte, chunkSize)
	got := 0
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if got == 0 && onFirstByte != nil {
				onFirstByte()
			}
			if got+n > len(want) {
				return fmt.Errorf("received more than the %d bytes sent", len(want))
			}
			if !bytes.Equal(buf[:n], want[got:got+n]) {
				return fmt.Errorf("data mismatch within bytes %d..%d", got, got+n)
			}
			got += n
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("after %d of %d bytes: %w", got, len(want), err)
		}
	}
	if got != len(want) {
		return fmt.Errorf("got %d of %d bytes before EOF", got, len(want))
	}
	return nil
}

// sendAll writes data then half-closes, reporting the outcome on the returned channel.
func sendAll(s network.Stream, data []byte) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); off += chunkSize {
			if _, err := s.Write(data[off:min(off+chunkSize, len(data))]); err != nil {
				errc <- fmt.Errorf("write: %w", err)
				return
			}
		}
		errc <- s.CloseWrite()
	}()
	return errc
}

// echoOnce echoes data over a new /echo stream, writing and reading concurrently.
func (d *dialer) echoOnce(data []byte, onFirstByte func()) error {
	s, err := d.open(protoEcho)
	if err != nil {
		return err
	}
	writing := sendAll(s, data)
	if err := readExact(s, data, onFirstByte); err != nil {
		s.Reset()
		return err
	}
	if err := <-writing; err != nil {
		s.Reset()
		return err
	}
	return s.Close()
}

func (d *dialer) echo(n int64) (*fields, error) {
	var first time.Time
	t0 := time.Now()
	if err := d.echoOnce(d.payload(n), func() { first = time.Now() }); err != nil {
		return nil, err
	}
	elapsed := time.Since(t0)
	if first.IsZero() {
		first = time.Now()
	}
	r := &fields{}
	r.set("mb_per_s", mbps(n, elapsed))
	r.set("first_byte_since_dial_ms", ms(first.Sub(d.dialStart)))
	return r, nil
}

func (d *dialer) sink(n int64) (*fields, error) {
	t0 := time.Now()
	s, err := d.open(protoSink)
	if err != nil {
		return nil, err
	}
	defer s.Reset() // no-op once closed
	if err := <-sendAll(s, d.payload(n)); err != nil {
		return nil, err
	}
	reply, err := io.ReadAll(io.LimitReader(s, 64))
	if err != nil {
		return nil, fmt.Errorf("reading the count: %w", err)
	}
	elapsed := time.Since(t0)
	if strings.TrimSpace(string(reply)) != strconv.FormatInt(n, 10) {
		return nil, fmt.Errorf("sink replied %q, expected %d", reply, n)
	}
	s.Close()
	r := &fields{}
	r.set("mb_per_s", mbps(n, elapsed))
	return r, nil
}

func (d *dialer) source(n int64) (*fields, error) {
	t0 := time.Now()
	s, err := d.open(protoSource)
	if err != nil {
		return nil, err
	}
	defer s.Reset()
	if _, err := fmt.Fprintf(s, "%d\n", n); err != nil {
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		return nil, err
	}
	got, err := io.CopyBuffer(io.Discard, s, make([]byte, chunkSize))
	if err != nil {
		return nil, fmt.Errorf("after %d bytes: %w", got, err)
	}
	elapsed := time.Since(t0)
	if got != n {
		return nil, fmt.Errorf("source sent %d bytes, expected %d", got, n)
	}
	s.Close()
	r := &fields{}
	r.set("mb_per_s", mbps(n, elapsed))
	return r, nil
}

func (d *dialer) latency(k int) (*fields, error) {
	if k < 1 {
		return nil, errors.New("latency needs K >= 1")
	}
	one := []byte{0x5a}
	var fresh, rtts []time.Duration
	for range k {
		t0 := time.Now()
		if err := d.echoOnce(one, nil); err != nil {
			return nil, err
		}
		fresh = append(fresh, time.Since(t0))
	}
	s, err := d.open(protoEcho)
	if err != nil {
		return nil, err
	}
	defer s.Reset()
	back := make([]byte, 1)
	for range k {
		t0 := time.Now()
		if _, err := s.Write(one); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(s, back); err != nil {
			return nil, err
		}
		if back[0] != one[0] {
			return nil, fmt.Errorf("echo replied %#x", back[0])
		}
		rtts = append(rtts, time.Since(t0))
	}
	finish(s)
	r := &fields{}
	r.set("new_stream_echo", stats(fresh))
	r.set("open_stream_rtt", stats(rtts))
	return r, nil
}

// finish half-closes and gives the remote 2 s to close its side (else the caller resets).
func finish(s network.Stream) {
	s.CloseWrite()
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, s); err == nil {
		s.Close()
	}
}

func (d *dialer) ping(k int) (*fields, error) {
	if k < 1 {
		return nil, errors.New("ping needs K >= 1")
	}
	s, err := d.open("/ipfs/ping/1.0.0")
	if err != nil {
		return nil, err
	}
	defer s.Reset()
	probe, back := make([]byte, 32), make([]byte, 32)
	var rtts []time.Duration
	for range k {
		rand.Read(probe)
		t0 := time.Now()
		if _, err := s.Write(probe); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(s, back); err != nil {
			return nil, err
		}
		if !bytes.Equal(probe, back) {
			return nil, errors.New("ping reply does not match")
		}
		rtts = append(rtts, time.Since(t0))
	}
	finish(s)
	r := &fields{}
	r.set("median_ms", stats(rtts)["median_ms"])
	return r, nil
}

func (d *dialer) concurrent(streams int, n int64) (*fields, error) {
	data := d.payload(n)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range streams {
		wg.Go(func() { errs[i] = d.echoOnce(data, nil) })
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	r := &fields{}
	r.set("streams", streams)
	r.set("mb_per_s", mbps(int64(streams)*n, elapsed))
	return r, nil
}

func (d *dialer) pause(n, seconds int64) (*fields, error) {
	data := d.payload(n)
	s, err := d.open(protoEcho)
	if err != nil {
		return nil, err
	}
	// Not reading: yamux stops granting window, the echo server stalls, then so do we.
	writing := sendAll(s, data)
	t0 := time.Now()
	select {
	case <-time.After(time.Duration(seconds) * time.Second):
	case <-d.ctx.Done():
		s.Reset()
		return nil, d.ctx.Err()
	}
	paused := time.Since(t0)
	select {
	case err := <-writing:
		if err != nil { // finishing early is fine (small N); failing is not
			s.Reset()
			return nil, fmt.Errorf("during the pause: %w", err)
		}
		writing = nil
	default:
	}
	if err := readExact(s, data, nil); err != nil {
		s.Reset()
		return nil, err
	}
	if writing != nil {
		if err := <-writing; err != nil {
			s.Reset()
			return nil, err
		}
	}
	s.Close()
	r := &fields{}
	r.set("paused_s", round3(paused.Seconds()))
	return r, nil
}

func (d *dialer) identify() (*fields, error) {
	if d.identity == nil {
		select {
		case <-d.h.IDService().IdentifyWait(d.conn):
		case <-time.After(30 * time.Second):
			return nil, errors.New("identify did not complete in 30 s")
		}
		timeout := time.After(10 * time.Second)
		for d.identity == nil {
			select {
			case e := <-d.idEvents:
				if ev := e.(event.EvtPeerIdentificationCompleted); ev.Peer == d.conn.RemotePeer() {
					d.identity = &ev
				}
			case <-timeout:
				return nil, errors.New("no identify result for the remote peer")
			}
		}
	}
	protos := protocol.ConvertToStrings(d.identity.Protocols)
	slices.Sort(protos)
	addrs := []string{}
	for _, a := range d.identity.ListenAddrs {
		addrs = append(addrs, a.String())
	}
	r := &fields{}
	r.set("protocols", protos)
	r.set("agent_version", d.identity.AgentVersion)
	r.set("listen_addrs", addrs)
	return r, nil
}

// direct waits up to seconds for a direct (not relayed) connection to the remote peer,
// e.g. one a hole punch made alongside the relayed connection the steps run on.
func (d *dialer) direct(seconds int64) (*fields, error) {
	start := time.Now()
	deadline := start.Add(time.Duration(seconds) * time.Second)
	for {
		for _, c := range d.net.ConnsToPeer(d.conn.RemotePeer()) {
			if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil && !c.IsClosed() {
				r := &fields{}
				r.set("ms", ms(time.Since(start)))
				r.set("since_dial_ms", ms(time.Since(d.dialStart)))
				r.set("addr", c.RemoteMultiaddr().String())
				r.set("direction", c.Stat().Direction.String())
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no direct connection within %d s", seconds)
		}
		select {
		case <-d.ctx.Done():
			return nil, d.ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}
