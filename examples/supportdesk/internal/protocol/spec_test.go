package protocol

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// protocolDoc is PROTOCOL.md, which spec.json must agree with.
const protocolDoc = "../../PROTOCOL.md"

func TestEmbeddedSpec(t *testing.T) {
	s, err := ParseSpec(specJSON)
	require.NoError(t, err)
	assert.NotPanics(t, func() { Embedded() })
	assert.Equal(t, s, Embedded())
}

func TestParseSpecRejects(t *testing.T) {
	for name, edit := range map[string]func(s string) string{
		"unknown field": func(s string) string { return strings.Replace(s, `"version": 1,`, `"version": 1, "extra": 2,`, 1) },
		"unknown role": func(s string) string {
			return strings.Replace(s, `"roles": ["agent"],`, `"roles": ["robot"],`, 1)
		},
		"unknown scope": func(s string) string {
			return strings.Replace(s, `"scope": "offeree"`, `"scope": "friend"`, 1)
		},
		"not an envelope field": func(s string) string {
			return strings.Replace(s, `"required": ["conv", "offer"]`, `"required": ["conv", "offr"]`, 1)
		},
		"reply not a server type": func(s string) string {
			return strings.Replace(s, `"reply": "pong"`, `"reply": "pang"`, 1)
		},
		"unknown error code": func(s string) string {
			return strings.Replace(s, `"error": "offer_gone"`, `"error": "gone"`, 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			edited := edit(string(specJSON))
			require.NotEqual(t, string(specJSON), edited, "the edit must apply")
			_, err := ParseSpec([]byte(edited))
			assert.ErrorIs(t, err, ErrBadSpec)
		})
	}
}

// constBlocks returns protocol.go's string constants by the first line of
// their const block's doc comment.
func constBlocks(t *testing.T) map[string]map[string]string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "protocol.go", nil, parser.ParseComments)
	require.NoError(t, err)
	out := map[string]map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST || gd.Doc == nil {
			continue
		}
		block := strings.TrimSpace(strings.SplitN(gd.Doc.Text(), "\n", 2)[0])
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i >= len(vs.Values) {
					continue
				}
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					continue
				}
				v, err := strconv.Unquote(lit.Value)
				require.NoError(t, err)
				if out[block] == nil {
					out[block] = map[string]string{}
				}
				out[block][n.Name] = v
			}
		}
	}
	return out
}

func valuesWithPrefix(m map[string]string, prefix string) []string {
	var vs []string
	for name, v := range m {
		if strings.HasPrefix(name, prefix) {
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}

func sortedKeys[K ~string | ~int, V any](m map[K]V) []K { return slices.Sorted(maps.Keys(m)) }

// TestSpecMatchesConstants: every Type and ErrCode constant of protocol.go is
// in the spec, and every type and code of the spec has its constant.
func TestSpecMatchesConstants(t *testing.T) {
	s := Embedded()
	blocks := constBlocks(t)
	client := blocks["Client → server message types."]
	server := blocks["Server → client message types."]
	codes := blocks["Error codes carried in error envelopes."]
	require.NotEmpty(t, client, "protocol.go's client type block (its doc comment changed?)")
	require.NotEmpty(t, server, "protocol.go's server type block (its doc comment changed?)")
	require.NotEmpty(t, codes, "protocol.go's error code block (its doc comment changed?)")

	assert.ElementsMatch(t, sortedKeys(s.ClientTypes), valuesWithPrefix(client, "Type"),
		"client types: spec.json vs protocol.go's client block")
	for _, v := range valuesWithPrefix(server, "Type") {
		assert.Contains(t, s.ServerTypes, v, "protocol.go's server type %q is not a server type of spec.json", v)
	}
	all := map[string]bool{}
	for _, b := range []map[string]string{client, server} {
		for _, v := range valuesWithPrefix(b, "Type") {
			all[v] = true
		}
	}
	for typ := range s.ServerTypes {
		assert.True(t, all[typ], "server type %q of spec.json has no Type constant in protocol.go", typ)
	}
	assert.ElementsMatch(t, sortedKeys(s.ErrorCodes), valuesWithPrefix(codes, "ErrCode"),
		"error codes: spec.json vs protocol.go")

	assert.Equal(t, MaxFrame, s.Limits.MaxFrame)
	assert.Equal(t, MaxText, s.Limits.MaxText)
}

// docSection returns the lines of PROTOCOL.md's section titled title (a
// "## " heading), up to the next heading of level 2.
func docSection(t *testing.T, doc, title string) []string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(doc, "\n") {
		if strings.HasPrefix(l, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(l, "## ")) == title
			continue
		}
		if in {
			out = append(out, l)
		}
	}
	require.NotEmpty(t, out, "PROTOCOL.md has no section %q", title)
	return out
}

// docRows returns the body rows of the first table in lines, as trimmed cells.
func docRows(lines []string) [][]string {
	var rows [][]string
	started := false
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			if started {
				break
			}
			continue
		}
		if !started { // the header row
			started = true
			continue
		}
		if strings.HasPrefix(l, "|---") || strings.HasPrefix(l, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	return rows
}

var backticked = regexp.MustCompile("`([^`]+)`")

func ticks(s string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// fieldTicks is ticks with `name: value` reduced to name.
func fieldTicks(s string) []string {
	out := ticks(s)
	for i, f := range out {
		name, _, _ := strings.Cut(f, ":")
		out[i] = strings.TrimSpace(name)
	}
	return out
}

// thousands formats n with comma separators, as PROTOCOL.md writes numbers.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func readDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(protocolDoc)
	require.NoError(t, err)
	return string(b)
}

// TestSpecMatchesProtocolDoc: the client and server tables, the error table
// and the close code table of PROTOCOL.md list exactly what spec.json does,
// with the same "who" and "to" cells, and the fields and answers spec.json
// names appear in their rows.
func TestSpecMatchesProtocolDoc(t *testing.T) {
	s := Embedded()
	doc := readDoc(t)

	t.Run("client types", func(t *testing.T) {
		seen := map[string]bool{}
		for _, row := range docRows(docSection(t, doc, "Client → server")) {
			require.Len(t, row, 4, "client row %q: type | who | fields | effect", row)
			for _, typ := range ticks(row[0]) {
				seen[typ] = true
				r, ok := s.ClientTypes[typ]
				if !assert.True(t, ok, "PROTOCOL.md's client type %q is not in spec.json", typ) {
					continue
				}
				assert.Equal(t, row[1], r.Who, "%s: spec.json's who must be PROTOCOL.md's (re-derive roles and scope when it changes)", typ)
				inRow := fieldTicks(strings.Join(row[1:], " "))
				for _, f := range slices.Concat(r.Required, r.Optional) {
					assert.Contains(t, inRow, f, "%s: field %q of spec.json is not in PROTOCOL.md's row", typ, f)
				}
				effect := ticks(row[3])
				for _, a := range append(slices.DeleteFunc([]string{r.Reply}, func(s string) bool { return s == "" }), r.Notify...) {
					assert.Contains(t, effect, a, "%s: answer %q of spec.json is not in PROTOCOL.md's effect", typ, a)
				}
			}
		}
		assert.ElementsMatch(t, sortedKeys(s.ClientTypes), sortedKeys(seen), "client types: spec.json vs PROTOCOL.md")
	})

	t.Run("server types", func(t *testing.T) {
		seen := map[string]bool{}
		for _, row := range docRows(docSection(t, doc, "Server → client")) {
			require.Len(t, row, 3, "server row %q: type | to | fields", row)
			for _, typ := range ticks(row[0]) {
				seen[typ] = true
				st, ok := s.ServerTypes[typ]
				if !assert.True(t, ok, "PROTOCOL.md's server type %q is not in spec.json", typ) {
					continue
				}
				assert.Equal(t, row[1], st.To, "%s: spec.json's to must be PROTOCOL.md's", typ)
				inRow := fieldTicks(row[2])
				for _, f := range st.Fields {
					assert.Contains(t, inRow, f, "%s: field %q of spec.json is not in PROTOCOL.md's row", typ, f)
				}
			}
		}
		assert.ElementsMatch(t, sortedKeys(s.ServerTypes), sortedKeys(seen), "server types: spec.json vs PROTOCOL.md")
	})

	t.Run("error codes", func(t *testing.T) {
		var codes []string
		for _, row := range docRows(docSection(t, doc, "Errors (the connection stays open)")) {
			codes = append(codes, ticks(row[0])...)
		}
		assert.ElementsMatch(t, sortedKeys(s.ErrorCodes), codes, "error codes: spec.json vs PROTOCOL.md")
	})

	t.Run("close codes", func(t *testing.T) {
		var codes []int
		for _, row := range docRows(docSection(t, doc, "Close codes")) {
			c, err := strconv.Atoi(row[0])
			if assert.NoError(t, err, "close code row %q", row) {
				codes = append(codes, c)
			}
		}
		assert.ElementsMatch(t, sortedKeys(s.CloseCodes), codes, "close codes: spec.json vs PROTOCOL.md")
	})

	t.Run("limits", func(t *testing.T) {
		flat := strings.Join(strings.Fields(doc), " ")
		l := s.Limits
		for _, phrase := range []string{
			"a frame is at most " + strconv.Itoa(l.MaxFrame>>10) + " KiB",
			"`text` at most " + strconv.Itoa(l.MaxText>>10) + " KiB",
			strconv.Itoa(l.FrameRate) + " frames/s per connection with a burst of " + strconv.Itoa(l.FrameBurst),
			strconv.Itoa(l.MessageRate) + " messages/s per conversation (burst " + strconv.Itoa(l.MessageBurst),
			"at most " + thousands(l.WaitingRoom) + " conversations",
			"more than " + strconv.Itoa(l.MaxQueuedBytes>>20) + " MiB was queued for you",
		} {
			assert.True(t, strings.Contains(flat, phrase), "PROTOCOL.md no longer says %q (spec.json's limits)", phrase)
		}
	})
}

// TestEnvelopeFieldsDocumented: PROTOCOL.md's envelope table names every
// field of Envelope a client can see, and nothing else.
func TestEnvelopeFieldsDocumented(t *testing.T) {
	var documented []string
	for _, row := range docRows(docSection(t, readDoc(t), "Connecting")) {
		documented = append(documented, ticks(row[0])...)
	}
	var fields []string
	for name := range envelopeFields() {
		if name != "target" { // internal: never sent to clients
			fields = append(fields, name)
		}
	}
	assert.ElementsMatch(t, fields, documented, "Envelope's JSON fields vs PROTOCOL.md's envelope table")
}

// TestAuthorize pins the authorization table against PROTOCOL.md's words.
func TestAuthorize(t *testing.T) {
	s := Embedded()
	own := Relation{Exists: true, Customer: true}
	assigned := Relation{Exists: true, Assigned: true}
	watching := Relation{Exists: true, Watching: true}
	outsider := Relation{Exists: true}
	offeree := Relation{Exists: true, Offeree: true}
	unknown := Relation{}
	msg := Envelope{Type: TypeMessage, Conv: "c", ID: "1", Text: "hi"}
	conv := func(typ string) Envelope { return Envelope{Type: typ, Conv: "c"} }
	for _, tc := range []struct {
		name string
		e    Envelope
		role string
		rel  Relation
		want string
	}{
		{"unknown type", Envelope{Type: "teleport"}, "customer", own, ErrCodeUnknownType},
		{"customer sends", msg, "customer", own, ""},
		{"assigned agent sends", msg, "agent", assigned, ""},
		{"watching supervisor may not send", msg, "supervisor", watching, ErrCodeNotParticipant},
		{"outsider may not send", msg, "customer", outsider, ErrCodeNotParticipant},
		{"send to unknown conversation", msg, "agent", unknown, ErrCodeNoConversation},
		{"message without id", Envelope{Type: TypeMessage, Conv: "c", Text: "hi"}, "customer", own, ErrCodeBadRequest},
		{"customer's first message opens", Envelope{Type: TypeMessage, ID: "1", Text: "hi"}, "customer", unknown, ""},
		{"agent's message needs conv", Envelope{Type: TypeMessage, ID: "1", Text: "hi"}, "agent", unknown, ErrCodeBadRequest},
		{"customer accepting an offer", Envelope{Type: TypeAccept, Conv: "c", Offer: "o"}, "customer", own, ErrCodeForbidden},
		{"offeree accepts", Envelope{Type: TypeAccept, Conv: "c", Offer: "o"}, "agent", offeree, ""},
		{"another agent's offer", Envelope{Type: TypeAccept, Conv: "c", Offer: "o"}, "agent", outsider, ErrCodeOfferGone},
		{"offer of an unknown conversation", Envelope{Type: TypeDecline, Conv: "c", Offer: "o"}, "agent", unknown, ErrCodeOfferGone},
		{"customer declining", Envelope{Type: TypeDecline, Conv: "c", Offer: "o"}, "customer", own, ErrCodeForbidden},
		{"watching supervisor may not resolve", conv(TypeResolve), "supervisor", watching, ErrCodeNotParticipant},
		{"customer resolves", conv(TypeResolve), "customer", own, ""},
		{"watching supervisor reads", Envelope{Type: TypeRead, Conv: "c", Offset: 1}, "supervisor", watching, ""},
		{"watching supervisor resumes", conv(TypeResume), "supervisor", watching, ""},
		{"watching supervisor may not type", Envelope{Type: TypeTyping, Conv: "c", State: "on"}, "supervisor", watching, ErrCodeNotParticipant},
		{"assigned agent's history", conv(TypeHistory), "agent", assigned, ""},
		{"unassigned agent's history", conv(TypeHistory), "agent", outsider, ErrCodeForbidden},
		{"supervisor's history", conv(TypeHistory), "supervisor", outsider, ""},
		{"customer's history", conv(TypeHistory), "customer", own, ErrCodeForbidden},
		{"supervisor transfers", conv(TypeTransfer), "supervisor", outsider, ""},
		{"unassigned agent transfers", conv(TypeTransfer), "agent", outsider, ErrCodeForbidden},
		{"customer cancels", conv(TypeCancel), "customer", own, ""},
		{"another customer cancels", conv(TypeCancel), "customer", outsider, ErrCodeNotParticipant},
		{"agent cancels", conv(TypeCancel), "agent", assigned, ErrCodeForbidden},
		{"agent watches", conv(TypeWatch), "agent", assigned, ErrCodeForbidden},
		{"supervisor watches", conv(TypeWatch), "supervisor", outsider, ""},
		{"watch an unknown conversation", conv(TypeWatch), "supervisor", unknown, ErrCodeNoConversation},
		{"customer sets presence", Envelope{Type: TypePresence, State: "online"}, "customer", unknown, ErrCodeForbidden},
		{"presence without state", Envelope{Type: TypePresence}, "agent", unknown, ErrCodeBadRequest},
		{"agent starts", Envelope{Type: TypeStart}, "agent", unknown, ErrCodeForbidden},
		{"customer starts", Envelope{Type: TypeStart}, "customer", unknown, ""},
		{"anyone pings", Envelope{Type: TypePing, Conv: "whatever"}, "supervisor", unknown, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, s.Authorize(&tc.e, tc.role, tc.rel))
		})
	}
}
