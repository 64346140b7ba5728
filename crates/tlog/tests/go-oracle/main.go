// An independent implementation to test posledger-tlog against: Go's golang.org/x/mod/sumdb/note
// (signed notes, keys) and sumdb/tlog (RFC 6962 consistency proofs), plus cosignature/v1 checked
// with Go's crypto/ed25519. Built offline from Debian's golang-golang-x-mod-dev
// (GO111MODULE=off GOPATH=/usr/share/gocode). Every command exits 0 on success, 1 with a message.
package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func read(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	return b
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: oracle verify|sign|generate|cosig-verify|consistency ...")
	}
	switch os.Args[1] {
	case "verify": // verify VKEY NOTEFILE: print the verified text
		v, err := note.NewVerifier(os.Args[2])
		if err != nil {
			fail("vkey: %v", err)
		}
		n, err := note.Open(read(os.Args[3]), note.VerifierList(v))
		if err != nil {
			fail("open: %v", err)
		}
		fmt.Print(n.Text)
	case "sign": // sign SKEY TEXTFILE: print the signed note
		s, err := note.NewSigner(os.Args[2])
		if err != nil {
			fail("skey: %v", err)
		}
		msg, err := note.Sign(&note.Note{Text: string(read(os.Args[3]))}, s)
		if err != nil {
			fail("sign: %v", err)
		}
		os.Stdout.Write(msg)
	case "generate": // generate NAME: print the private key and the verifier key, one per line
		skey, vkey, err := note.GenerateKey(nil, os.Args[2])
		if err != nil {
			fail("generate: %v", err)
		}
		fmt.Println(skey)
		fmt.Println(vkey)
	case "cosig-verify": // cosig-verify VKEY NOTEFILE: print the timestamp of the key's cosignature
		parts := strings.SplitN(os.Args[2], "+", 3)
		key, err := base64.StdEncoding.DecodeString(parts[2])
		if err != nil || len(key) != 33 || key[0] != 4 {
			fail("not a cosignature vkey")
		}
		h := sha256.Sum256(append([]byte(parts[0]+"\n"), key...))
		id := binary.BigEndian.Uint32(h[:4])
		msg := string(read(os.Args[3]))
		split := strings.LastIndex(msg, "\n\n")
		text, sigs := msg[:split+1], msg[split+2:]
		for _, line := range strings.Split(strings.TrimSuffix(sigs, "\n"), "\n") {
			fields := strings.SplitN(strings.TrimPrefix(line, "— "), " ", 2)
			raw, err := base64.StdEncoding.DecodeString(fields[1])
			if err != nil || fields[0] != parts[0] || len(raw) != 4+8+64 || binary.BigEndian.Uint32(raw) != id {
				continue
			}
			ts := binary.BigEndian.Uint64(raw[4:12])
			signed := fmt.Sprintf("cosignature/v1\ntime %d\n%s", ts, text)
			if !ed25519.Verify(ed25519.PublicKey(key[1:]), []byte(signed), raw[12:]) {
				fail("cosignature does not verify")
			}
			fmt.Println(ts)
			return
		}
		fail("no cosignature of %s", parts[0])
	case "consistency": // consistency OLD OLDROOT NEW NEWROOT [PROOF...] (hashes in base64)
		old, _ := strconv.ParseInt(os.Args[2], 10, 64)
		n, _ := strconv.ParseInt(os.Args[4], 10, 64)
		hash := func(s string) tlog.Hash {
			var h tlog.Hash
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil || len(b) != 32 {
				fail("bad hash %q", s)
			}
			copy(h[:], b)
			return h
		}
		var proof tlog.TreeProof
		for _, s := range os.Args[6:] {
			proof = append(proof, hash(s))
		}
		if err := tlog.CheckTree(proof, n, hash(os.Args[5]), old, hash(os.Args[3])); err != nil {
			fail("consistency: %v", err)
		}
	default:
		fail("unknown command %s", os.Args[1])
	}
}
