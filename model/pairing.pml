/*
 * peer-up's pairing protocol (issue 13, item 5): an abstract Promela model, checked by
 * spin in CI (tests/model/test_pairing_model.py; by hand: model/README.md).
 *
 * What it mirrors (the code as implemented; keep the two in step):
 *   proctype Joiner    proto/pairing.py  PairingHandshake.joiner, _on_challenge,
 *                                        _on_welcome, _fail;
 *                      app/pairing.py    join, _joined (the inviter is written in only
 *                                        after PairingCompleted), record_peer.
 *   proctype Inviter   proto/pairing.py  PairingHandshake.inviter, _on_hello, accept,
 *                                        _on_confirm, welcome, refuse, abort;
 *                      app/pairing.py    PairingService._serve, _on_requested
 *                                        (begin_attempt, then accept: the attempt is
 *                                        counted before the CHALLENGE goes out),
 *                                        _on_confirmed (mark_used, then record_peer:
 *                                        authorized_keys, then names, then WELCOME),
 *                                        _on_failed (attempt_failed: burnt by the
 *                                        MAX_ATTEMPTS-th failure).
 *   REFUSES, inv_*     app/pairing.py    refusal_for, begin_attempt, attempt_failed,
 *                                        mark_used, MAX_ATTEMPTS;
 *                      config/invite_store.py  StoredInvite (state, attempts,
 *                                        is_expired, is_open); InviteStore.transact
 *                                        runs under flock: each store change is one
 *                                        atomic step here.
 *   GATE_ADMITS        app/pairing.py    PairingService.admit: a peer that
 *                                        authorized_keys refuses gets a stream on
 *                                        /peerup/invite/2.0.0 only, while an invite is
 *                                        open (checked when J's stream opens; its HELLO
 *                                        may be read after that; the attacker opens a
 *                                        stream and sends its HELLO in one step).
 *   *_MAC_OK, KEY_BINDS_PEER_IDS
 *                      proto/pairing.py  _password, _spake_identity, _start_transcript,
 *                                        _derive, _mac, _mac_is_valid.
 *   jcode              proto/invite_code.py  InviteCode: the secret, and the inviter's
 *                                        peer ID that J binds and writes in (I). A
 *                                        mistyped code is caught by its CRC before any
 *                                        network use; a code of another invite is not
 *                                        (J's second run may hold one).
 *   Env                `peerup invite revoke`, and time passing the invite's expiry.
 *
 * Abstractions (assumed, not checked):
 *   - SPAKE2, HKDF and HMAC are perfect. A session key is determined by the code each
 *     side used, the peer IDs each side bound (SPAKE2 identities and transcript) and
 *     both SPAKE2 messages (fresh scalars: A(r) of join run r, B(k) of inviter stream
 *     k, XN the attacker's). A MAC is (key, label, transcript); here it is named by the
 *     honest message that carried it (CH_MAC, CF_MAC, WE_MAC: the label and which of
 *     the two HKDF keys), and it verifies only where the verifier's own code, bound
 *     peer IDs and SPAKE2 messages are the same. MAC 0 is anything computed without
 *     the code: the attacker's. A transcript tells the attacker nothing about the code
 *     (no offline dictionary attack), so each answered exchange is one online guess.
 *   - The attacker is the relay and the network, and a peer of its own (M). It reads
 *     every message (stronger than Noise), drops, delays, reorders and replays any
 *     honest message into any stream it is an end of, cuts any stream (which also
 *     stands for a timeout), and runs its own pairings as M with a guessed code and
 *     its own SPAKE2 message or one that J sent. It cannot speak as J to I: I writes in
 *     the peer ID that Noise authenticated (an entry for J's key is of no use to M).
 *   - ATTACKER_ANSWERS_DIAL (on): J does not rely on Noise. J dials the code's inviter
 *     through the relay, and here the relay may answer that dial itself, as if J's
 *     check of the inviter's peer ID were missing: a man in the middle relaying SPAKE2
 *     messages between J and I is in the model, and binding both peer IDs into the key
 *     is what stops it (mutation no_peer_id_binding). The code has both defences.
 *   - Bounded: NI = 4 streams to the inviter (each one attempt at most; more than
 *     MAX_ATTEMPTS, so that a 4th guess is tried), NJ = 2 join runs of J (at once or
 *     one after the other), one invite (invites are independent records and each
 *     store change touches one). A refusal and a reset both end the stream (cut_*),
 *     and each side handles them alike. An inviter stream killed while it waits for
 *     CONFIRM is one the attacker leaves waiting: its attempt stays counted and
 *     attempt_failed never runs.
 *   - A MAC is not replayed under another label (CHALLENGE's as CONFIRM, ...): labels
 *     and the two HKDF keys differ, so such a MAC fails like MAC 0.
 *   - Not modelled: cards, names, services and introductions (inside the MACed
 *     transcript: only their integrity matters), relay enrollment
 *     (app/relay_enrollment.py: the same handshake and PairingService, with the relay as
 *     the inviter), MAX_ADMITTED and ADMISSION_S, the short authentication string.
 *   - For a smaller state space, what no one reads any more is reset when a run ends,
 *     and an inviter stream whose key is bound to M keeps no SPAKE2 message (a key
 *     bound to M never matches one bound to J, so which one it was cannot matter).
 *
 * Properties: assertions, each naming its property in pan's "assertion violated" line
 * (monitor_P_a and monitor_P_d check invariants in every state, the rest are checked
 * where the event happens):
 *   P_a  the attacker never gets into either allowlist.
 *   P_b  neither side authorises a peer other than the real other side: I writes in
 *        only J, and only a J run that did this very exchange with it (same code, same
 *        peer IDs, same SPAKE2 messages); J writes I in only once I has written J in,
 *        in the exchange J completed.
 *   P_c  a code yields at most one successful pairing: one success at the inviter and
 *        one completed join at most, and no exchange is answered once it was used.
 *   P_d  a failed or aborted pairing changes no allowlist: only a run that verified the
 *        other side's key confirmation writes (and only that peer); without a joiner
 *        confirmed at the inviter both allowlists stay as they were; J never holds I
 *        unless I holds J. A run that confirmed and then could not finish (the WELCOME
 *        was lost) may leave its own half: that is allowed; a run reported failed
 *        leaves its own allowlist unchanged (record_peer writes names first and
 *        authorized_keys last, the commit point, so a failed write leaves no half).
 *   P_e  guesses are bounded: at most MAX_ATTEMPTS exchanges are ever answered for a
 *        code, and none after it was revoked or expired.
 */

/* The attacker's actions and the agreement checks are written out for these two. */
#define NI 4            /* streams to the inviter over the whole run */
#define NJ 2            /* `peerup join` runs on J (a retry, or two at once) */
#define MAX_ATTEMPTS 3  /* app/pairing.py MAX_ATTEMPTS */
#ifndef ATTACKER_ANSWERS_DIAL
#define ATTACKER_ANSWERS_DIAL 1
#endif

/* peer IDs */
#define NOBODY 0
#define I 1             /* the inviter */
#define J 2             /* the joiner, the only other machine with the code */
#define M 3             /* the attacker (relay, network, and a peer of its own) */

/* codes */
#define REAL 1          /* the invite's secret */
#define WRONG 2         /* a code of another invite (the attacker's guesses are MAC 0) */

/* SPAKE2 messages ("nonces") */
#define XN 9            /* the attacker's own */
#define A(r) ((r) + 1)  /* joiner run r's */
#define B(k) ((k) + 1)  /* inviter stream k's */

/* MAC ids: the honest message that carried it; 0 = computed without the code */
#define CH_MAC(k) (1 + (k))
#define WE_MAC(k) (1 + NI + (k))
#define CF_MAC(r) (1 + 2 * NI + (r))
#define IS_CH(m) ((m) >= 1 && (m) <= NI)
#define IS_WE(m) ((m) >= 1 + NI && (m) <= 2 * NI)
#define IS_CF(m) ((m) >= 1 + 2 * NI && (m) <= 2 * NI + NJ)

/* _spake_identity and _start_transcript: the key and every MAC cover both peer IDs as
   each side bound them. The inviter's is bound alike on both sides (J takes it from
   the code, I is itself); the joiner's is J for J, and Noise's remote peer for I. */
#define KEY_BINDS_PEER_IDS(joiner_bound_by_sender, joiner_bound_by_verifier) \
	((joiner_bound_by_sender) == (joiner_bound_by_verifier))

/* _mac_is_valid on I, for CONFIRM in stream k (the joiner's key, label "confirm") */
#define CONFIRM_MAC_OK(k, m) \
	(IS_CF(m) && jcode[(m) - 1 - 2 * NI] == REAL \
	 && KEY_BINDS_PEER_IDS(J, slot_peer[k]) \
	 && A((m) - 1 - 2 * NI) == slot_nA[k] && jrun_nB[(m) - 1 - 2 * NI] == B(k))
/* on J run r, for CHALLENGE{nb} (the inviter's key, label "challenge") */
#define CHALLENGE_MAC_OK(r, nb, m) \
	(IS_CH(m) && jcode[r] == REAL \
	 && KEY_BINDS_PEER_IDS(slot_peer[(m) - 1], J) \
	 && slot_nA[(m) - 1] == A(r) && B((m) - 1) == (nb))
/* on J run r, for WELCOME (the inviter's key, label "welcome") */
#define WELCOME_MAC_OK(r, m) \
	(IS_WE(m) && jcode[r] == REAL \
	 && KEY_BINDS_PEER_IDS(slot_peer[(m) - 1 - NI], J) \
	 && slot_nA[(m) - 1 - NI] == A(r) && B((m) - 1 - NI) == jrun_nB[r])

mtype = { HELLO, CHALLENGE, CONFIRM, WELCOME };

/* --- the invite (config/invite_store.py StoredInvite) ------------------------------ */
#define PENDING 0
#define USED 1
#define BURNT 2
#define REVOKED 3
byte inv_state = PENDING;
byte inv_attempts = 0;
bool inv_expired = false;       /* now >= expires_at */
#define IS_OPEN (inv_state == PENDING && !inv_expired)
/* app/pairing.py refusal_for (UNKNOWN_INVITE is not modelled: one invite) */
#define REFUSES (inv_state == USED || inv_state == BURNT || inv_attempts >= MAX_ATTEMPTS \
	|| inv_state == REVOKED || inv_expired)
/* app/pairing.py PairingService.admit: for a peer `p` that authorized_keys refuses,
   a stream on the invite protocol only, while an invite is open */
#define GATE_ADMITS(p) (allowI[p] || IS_OPEN)

/* --- the allowlists (authorized_keys), indexed by peer ID -------------------------- */
bool allowI[4];                 /* I's */
bool allowJ[4];                 /* J's */

/* --- inviter streams ---------------------------------------------------------------- */
#define S_FREE 0
#define S_WAIT_HELLO 1
#define S_WAIT_CONFIRM 2
#define S_ENDED 3
#define NONE 255
byte slot_phase[NI];
byte slot_peer[NI];             /* Noise's remote peer of stream k */
byte slot_jrun[NI] = NONE;      /* the join run at the other end, if J opened it */
byte slot_nA[NI];               /* the SPAKE2 A message it answered */
bool slot_chal[NI];             /* it sent its CHALLENGE (the attacker has it) */
bool slot_wrote[NI];            /* it wrote its peer into authorized_keys */
bool slot_welc[NI];             /* it sent its WELCOME (the attacker has it) */
bool cut_inv[NI];               /* J <-> I stream ended (reset, refusal, timeout) */
chan to_inv[NI] = [1] of { mtype, byte, byte };     /* from J, through Noise */
chan att_inv[NI] = [0] of { mtype, byte, byte };    /* from the attacker, as M */

/* --- joiner runs -------------------------------------------------------------------- */
#define J_WAIT_CHALLENGE 1
#define J_WAIT_WELCOME 2
#define J_ENDED 3
#define GENUINE 1               /* the dial reached I (a Noise session J <-> I) */
#define VIA_ATTACKER 2          /* the relay answered the dial itself */
byte jphase[NJ];
byte jmode[NJ];
byte jslot[NJ];
byte jcode[NJ];
byte jrun_nB[NJ];               /* the SPAKE2 B message it took */
bool jrun_hello[NJ];            /* HELLO sent (the attacker has it) */
bool jrun_conf[NJ];             /* CONFIRM sent (the attacker has it) */
bool cut_join[NJ];
bool jwrote[NJ];                /* this run wrote I into authorized_keys */
chan to_join[NJ] = [1] of { mtype, byte, byte };    /* from I, through Noise */
chan att_join[NJ] = [0] of { mtype, byte, byte };   /* from the attacker */

/* --- ghosts (for the properties only) ----------------------------------------------- */
byte answered = 0;              /* CHALLENGEs sent: online guesses granted */
byte successes = 0;             /* mark_used succeeded */
byte completions = 0;           /* joiner runs that verified WELCOME */
bool confirmed_at_I = false;    /* some stream verified a joiner's CONFIRM */
bool ever_revoked = false;

/* Assertion labels: constant 1 and hidden (not in the state); they name the property
   in pan's "assertion violated" line. */
hidden byte P_a_attacker_never_authorised = 1;
hidden byte P_b_inviter_writes_in_only_the_joiner_it_paired_with = 1;
hidden byte P_b_joiner_writes_in_only_an_inviter_that_wrote_it_in = 1;
hidden byte P_c_at_most_one_success_per_code = 1;
hidden byte P_c_no_exchange_answered_after_use = 1;
hidden byte P_d_written_only_after_confirmation = 1;
hidden byte P_d_no_allowlist_change_without_a_confirmed_joiner = 1;
hidden byte P_d_failed_run_left_its_allowlist_unchanged = 1;
hidden byte P_e_at_most_MAX_ATTEMPTS_exchanges_answered = 1;
hidden byte P_e_no_exchange_answered_after_revocation_or_expiry = 1;

/* I writes its peer in (record_peer -> Allowlist.add): the checks of P_b and P_d */
#define I_AGREES(k, r) (jrun_conf[r] && jcode[r] == REAL && A(r) == slot_nA[k] \
	&& jrun_nB[r] == B(k))
inline i_write_authorized_keys(k)
{
	assert(P_d_written_only_after_confirmation && confirmed);
	assert(P_b_inviter_writes_in_only_the_joiner_it_paired_with && slot_peer[k] == J
		&& (I_AGREES(k, 0) || I_AGREES(k, 1)));
	allowI[slot_peer[k]] = true;
	slot_wrote[k] = true
}

/* J writes the code's inviter in (_joined -> record -> record_peer -> Allowlist.add) */
#define J_AGREES(k, r) (slot_wrote[k] && slot_peer[k] == J && slot_nA[k] == A(r) \
	&& B(k) == jrun_nB[r])
inline j_write_authorized_keys(r)
{
	assert(P_d_written_only_after_confirmation && completed);
	assert(P_b_joiner_writes_in_only_an_inviter_that_wrote_it_in
		&& (J_AGREES(0, r) || J_AGREES(1, r) || J_AGREES(2, r) || J_AGREES(3, r)));
	allowJ[I] = true;               /* code.inviter */
	jwrote[r] = true
}

/* Stream k ends. What no one reads any more is reset (a smaller state space): the
   attacker's knowledge (slot_peer, slot_nA, slot_chal, slot_welc) stays. */
inline i_end_quietly(k)
{
	slot_phase[k] = S_ENDED;
	cut_inv[k] = false;
	slot_jrun[k] = NONE;
	typ = 0; nonce = 0; mac = 0; confirmed = false;
	do
	:: to_inv[k] ? _, _, _
	:: empty(to_inv[k]) -> break
	od
}
/* ... and its other end hears so (a REFUSAL or a reset) */
inline i_end(k)
{
	if
	:: slot_jrun[k] != NONE && jphase[slot_jrun[k]] != J_ENDED ->
		cut_join[slot_jrun[k]] = true
	:: else -> skip
	fi;
	i_end_quietly(k)
}

/* _on_failed -> attempt_failed (under the store's lock): burnt by the last failure */
inline i_attempt_failed(k)
{
	if
	:: inv_state == PENDING && inv_attempts >= MAX_ATTEMPTS -> inv_state = BURNT
	:: else -> skip
	fi;
	i_end(k)
}

/* HELLO{A} in stream k: _on_hello, then _on_requested (begin_attempt under the store's
   lock, then accept()) */
inline i_on_hello(k)
{
	if
	:: REFUSES ->                       /* refuse(): a REFUSAL, no attempt */
		i_end(k);
		goto gone
	:: else ->
		inv_attempts++                  /* counted before answering */
	fi;
	/* The SPAKE2 message answered. A key bound to M never matches one bound to J, so
	   then which message it was cannot matter: it is not kept (fewer states). */
	if
	:: KEY_BINDS_PEER_IDS(slot_peer[k], J) -> slot_nA[k] = nonce
	:: else -> slot_nA[k] = XN
	fi;
	typ = 0; nonce = 0; mac = 0;
	assert(P_c_no_exchange_answered_after_use && successes == 0);
	assert(P_e_no_exchange_answered_after_revocation_or_expiry
		&& !ever_revoked && !inv_expired);
	answered++;
	assert(P_e_at_most_MAX_ATTEMPTS_exchanges_answered && answered <= MAX_ATTEMPTS);
	slot_phase[k] = S_WAIT_CONFIRM;     /* CHALLENGE{B(k), CH_MAC(k)} */
	slot_chal[k] = true;
	if
	:: slot_jrun[k] != NONE && jphase[slot_jrun[k]] != J_ENDED ->
		to_join[slot_jrun[k]] ! CHALLENGE, B(k), CH_MAC(k)
	:: else -> skip
	fi
}

/* CONFIRM in stream k: _on_confirm, then _on_confirmed (mark_used under the lock) */
inline i_on_confirm(k)
{
	if
	:: typ == CONFIRM && CONFIRM_MAC_OK(k, mac) -> skip
	:: else -> i_attempt_failed(k); goto gone   /* WRONG_CODE (or a protocol error) */
	fi;
	typ = 0; nonce = 0; mac = 0;
	confirmed = true;
	confirmed_at_I = true;
	if
	:: inv_state != PENDING ->          /* it ended meanwhile: abort() with the reason */
		i_end(k);
		goto gone
	:: else ->
		inv_state = USED;
		successes++;
		assert(P_c_at_most_one_success_per_code && successes <= 1)
	fi
}

/* PairingService._serve for one stream k on /peerup/invite/2.0.0 */
proctype Inviter(byte k)
{
	mtype typ;
	byte nonce, mac;
	bool confirmed = false;

end_wait_hello:
	if
	:: atomic { to_inv[k] ? typ, nonce, mac -> i_on_hello(k) }    /* J opened it */
	:: atomic { att_inv[k] ? typ, nonce, mac -> i_on_hello(k) }   /* M opened it */
	:: atomic { cut_inv[k] -> i_end_quietly(k); goto gone }
	fi;

end_wait_confirm:
	if
	:: atomic { to_inv[k] ? typ, nonce, mac -> i_on_confirm(k) }
	:: atomic { att_inv[k] ? typ, nonce, mac -> i_on_confirm(k) }
	:: atomic { cut_inv[k] ->           /* ABORTED, TIMEOUT, the joiner's REFUSAL */
		i_attempt_failed(k); goto gone }
	fi;

	/* record_peer: names, then authorized_keys (each write atomic), the commit point:
	   nothing after it can fail; then welcome() */
	if
	:: atomic {                         /* raised before authorized_keys (the names
	                                       write, or killed): abort(INTERNAL) */
			assert(P_d_failed_run_left_its_allowlist_unchanged && !slot_wrote[k]);
			i_end(k); goto gone }
	:: atomic { i_write_authorized_keys(k) }
	fi;
	atomic {                            /* WELCOME{WE_MAC(k)} */
		slot_welc[k] = true;
		if
		:: slot_jrun[k] != NONE && jphase[slot_jrun[k]] != J_ENDED ->
			to_join[slot_jrun[k]] ! WELCOME, 0, WE_MAC(k)
		:: else -> skip
		fi;
		i_end_quietly(k)
	}
gone:
	skip
}

/* Run r ends; as for i_end_quietly, what no one reads any more is reset. */
inline j_end_quietly(r)
{
	jphase[r] = J_ENDED;
	cut_join[r] = false;
	jmode[r] = 0;
	jslot[r] = 0;
	typ = 0; nonce = 0; mac = 0; completed = false;
	do
	:: to_join[r] ? _, _, _
	:: empty(to_join[r]) -> break
	od
}
/* it failed (_fail, or a PairingFailed from the other side): nothing is written, and
   the other end hears so */
inline j_failed(r)
{
	if
	:: jmode[r] == GENUINE && slot_phase[jslot[r]] != S_ENDED -> cut_inv[jslot[r]] = true
	:: else -> skip
	fi;
	j_end_quietly(r)
}

/* CHALLENGE{nb} in run r: _on_challenge, then CONFIRM{CF_MAC(r)} */
inline j_on_challenge(r)
{
	if
	:: typ == CHALLENGE && CHALLENGE_MAC_OK(r, nonce, mac) -> skip
	:: else -> j_failed(r); goto gone   /* WRONG_CODE (or a refusal, a protocol error) */
	fi;
	jrun_nB[r] = nonce;
	typ = 0; nonce = 0; mac = 0;
	jrun_conf[r] = true;
	jphase[r] = J_WAIT_WELCOME;
	if
	:: jmode[r] == GENUINE && slot_phase[jslot[r]] != S_ENDED ->
		to_inv[jslot[r]] ! CONFIRM, 0, CF_MAC(r)
	:: else -> skip
	fi
}

/* WELCOME in run r: _on_welcome, PairingCompleted */
inline j_on_welcome(r)
{
	if
	:: typ == WELCOME && WELCOME_MAC_OK(r, mac) -> skip
	:: else -> j_failed(r); goto gone   /* a protocol error (or a refusal) */
	fi;
	typ = 0; nonce = 0; mac = 0;
	completed = true;
	completions++;
	assert(P_c_at_most_one_success_per_code && completions <= 1)
}

/* join() on J: one run of `peerup join <code>` */
proctype Joiner(byte r)
{
	mtype typ;
	byte nonce, mac;
	bool completed = false;

	atomic {
		if
		:: jcode[r] = REAL
		:: r == 1 -> jcode[r] = WRONG   /* a retry with a code of another invite */
		fi;
		/* dial the code's inviter through the relay, then HELLO{A(r)} */
		if
		:: GATE_ADMITS(J) && slot_phase[0] == S_FREE -> jslot[r] = 0
		:: GATE_ADMITS(J) && slot_phase[0] != S_FREE && slot_phase[1] == S_FREE -> jslot[r] = 1
		:: GATE_ADMITS(J) && slot_phase[1] != S_FREE && slot_phase[2] == S_FREE -> jslot[r] = 2
		:: GATE_ADMITS(J) && slot_phase[2] != S_FREE && slot_phase[3] == S_FREE -> jslot[r] = 3
#if ATTACKER_ANSWERS_DIAL
		:: jmode[r] = VIA_ATTACKER
#endif
		:: else -> j_end_quietly(r); goto gone  /* refused by the gate */
		fi;
		if
		:: jmode[r] == 0 ->
			jmode[r] = GENUINE;
			slot_peer[jslot[r]] = J;
			slot_jrun[jslot[r]] = r;
			slot_phase[jslot[r]] = S_WAIT_HELLO;
			to_inv[jslot[r]] ! HELLO, A(r), 0
		:: else -> skip
		fi;
		jrun_hello[r] = true;           /* the attacker reads it either way */
		jphase[r] = J_WAIT_CHALLENGE
	}

end_wait_challenge:
	if
	:: atomic { to_join[r] ? typ, nonce, mac -> j_on_challenge(r) }
	:: atomic { att_join[r] ? typ, nonce, mac -> j_on_challenge(r) }
	:: atomic { cut_join[r] -> j_failed(r); goto gone }  /* a REFUSAL, reset, timeout */
	fi;

end_wait_welcome:
	if
	:: atomic { to_join[r] ? typ, nonce, mac -> j_on_welcome(r) }
	:: atomic { att_join[r] ? typ, nonce, mac -> j_on_welcome(r) }
	:: atomic { cut_join[r] -> j_failed(r); goto gone }
	fi;

	/* _joined: record(code.inviter, card): names, then authorized_keys, the commit
	   point: nothing after it can fail */
	if
	:: atomic {                         /* raised before authorized_keys (the names
	                                       write, or killed): the join failed */
			assert(P_d_failed_run_left_its_allowlist_unchanged && !jwrote[r]);
			j_end_quietly(r); goto gone }
	:: atomic { j_write_authorized_keys(r); j_end_quietly(r) }
	fi;
gone:
	skip
}

/* The attacker: the relay, the network, and peer M. Each action is one atomic step;
   a message from the attacker is handed over at once (rendezvous), so that only what
   the receiver did with it is in the state. */
#define LOWEST_FREE(k) (slot_phase[k] == S_FREE && (k == 0 || slot_phase[(k) - 1] != S_FREE))
/* open a stream to I as M (the gate admits it to pairing only) and send HELLO with
   its own SPAKE2 message (a guessed code) or one that J sent */
#define ATT_HELLO(k) \
	atomic { LOWEST_FREE(k) && GATE_ADMITS(M) -> \
		slot_peer[k] = M; slot_phase[k] = S_WAIT_HELLO; \
		if \
		:: att_inv[k] ! HELLO, XN, 0 \
		:: jrun_hello[0] -> att_inv[k] ! HELLO, A(0), 0 \
		:: jrun_hello[1] -> att_inv[k] ! HELLO, A(1), 0 \
		fi }
/* CONFIRM in its own stream: a MAC made without the code, or one that J sent. (Not
   sending one leaves the stream waiting, its attempt counted: as if the inviter's
   process had been killed meanwhile.) */
#define ATT_CONFIRM(k) \
	atomic { slot_peer[k] == M && slot_phase[k] == S_WAIT_CONFIRM -> \
		if \
		:: att_inv[k] ! CONFIRM, 0, 0 \
		:: jrun_conf[0] -> att_inv[k] ! CONFIRM, 0, CF_MAC(0) \
		:: jrun_conf[1] -> att_inv[k] ! CONFIRM, 0, CF_MAC(1) \
		fi }
/* answer a dial of J that the relay took: a CHALLENGE made without the code, or one
   that I sent in any stream */
#define ATT_CHALLENGE(r) \
	atomic { jmode[r] == VIA_ATTACKER && jphase[r] == J_WAIT_CHALLENGE -> \
		if \
		:: att_join[r] ! CHALLENGE, XN, 0 \
		:: slot_chal[0] -> att_join[r] ! CHALLENGE, B(0), CH_MAC(0) \
		:: slot_chal[1] -> att_join[r] ! CHALLENGE, B(1), CH_MAC(1) \
		:: slot_chal[2] -> att_join[r] ! CHALLENGE, B(2), CH_MAC(2) \
		:: slot_chal[3] -> att_join[r] ! CHALLENGE, B(3), CH_MAC(3) \
		fi }
#define ATT_WELCOME(r) \
	atomic { jmode[r] == VIA_ATTACKER && jphase[r] == J_WAIT_WELCOME -> \
		if \
		:: att_join[r] ! WELCOME, 0, 0 \
		:: slot_welc[0] -> att_join[r] ! WELCOME, 0, WE_MAC(0) \
		:: slot_welc[1] -> att_join[r] ! WELCOME, 0, WE_MAC(1) \
		:: slot_welc[2] -> att_join[r] ! WELCOME, 0, WE_MAC(2) \
		:: slot_welc[3] -> att_join[r] ! WELCOME, 0, WE_MAC(3) \
		fi }
/* cut a J <-> I stream (it cannot read nor change what is inside): a drop, a reset,
   or a timeout at that end */
#define ATT_CUT_I(k) \
	atomic { slot_jrun[k] != NONE && !cut_inv[k] \
		&& (slot_phase[k] == S_WAIT_HELLO || slot_phase[k] == S_WAIT_CONFIRM) \
		-> cut_inv[k] = true }
#define ATT_CUT_J(r) \
	atomic { jmode[r] == GENUINE && !cut_join[r] \
		&& (jphase[r] == J_WAIT_CHALLENGE || jphase[r] == J_WAIT_WELCOME) \
		-> cut_join[r] = true }

active proctype Attacker()
{
end_attacker:
	do
	:: ATT_HELLO(0)
	:: ATT_HELLO(1)
	:: ATT_HELLO(2)
	:: ATT_HELLO(3)
	:: ATT_CONFIRM(0)
	:: ATT_CONFIRM(1)
	:: ATT_CONFIRM(2)
	:: ATT_CONFIRM(3)
	:: ATT_CHALLENGE(0)
	:: ATT_CHALLENGE(1)
	:: ATT_WELCOME(0)
	:: ATT_WELCOME(1)
	:: ATT_CUT_I(0)
	:: ATT_CUT_I(1)
	:: ATT_CUT_I(2)
	:: ATT_CUT_I(3)
	:: ATT_CUT_J(0)
	:: ATT_CUT_J(1)
	od
}

/* `peerup invite revoke`, and the invite's expiry passing, each at any moment */
active proctype Env()
{
end_env:
	do
	:: atomic { inv_state == PENDING && !ever_revoked -> inv_state = REVOKED; ever_revoked = true }
	:: atomic { !inv_expired -> inv_expired = true }
	od
}

/* Global invariants: each monitor waits for its property to break, then fails. */
active proctype monitor_P_a()
{
end_watch:
	atomic { allowI[M] || allowJ[M] ->
		assert(P_a_attacker_never_authorised && !allowI[M] && !allowJ[M]) }
}

#define P_D_GLOBAL (!((allowI[J] || allowJ[I]) && !confirmed_at_I) \
	&& !(allowJ[I] && !allowI[J]))
active proctype monitor_P_d()
{
end_watch:
	atomic { !P_D_GLOBAL ->
		assert(P_d_no_allowlist_change_without_a_confirmed_joiner && P_D_GLOBAL) }
}

init
{
	atomic {
		run Inviter(0); run Inviter(1); run Inviter(2); run Inviter(3);
		run Joiner(0); run Joiner(1)
	}
}
