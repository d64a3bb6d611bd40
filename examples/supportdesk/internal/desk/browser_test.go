package desk_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"
)

// The browser test drives the three pages in headless Chromium. It is
// skipped when no Chromium is installed, unless SWITCHBOARD_REQUIRE_BROWSER=1
// (CI), which turns a missing browser into a failure. Screenshots go to
// $SWITCHBOARD_ARTIFACTS (default: a temporary directory); with
// SWITCHBOARD_UPDATE_SCREENSHOTS=1 the 1280×800 ones are also copied to
// docs/screenshots for the README.

// browserWait bounds each step; generous because CI machines are small and
// the race detector slows the server several-fold.
const browserWait = 30 * time.Second

func chromiumPath() string {
	if p := os.Getenv("SWITCHBOARD_CHROMIUM"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts one headless Chromium for the test and returns its root
// context; users get their own browser contexts (separate storage) from it.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("SWITCHBOARD_REQUIRE_BROWSER") == "1" {
			t.Fatal("SWITCHBOARD_REQUIRE_BROWSER=1 but no chromium binary was found (install Debian's chromium package)")
		}
		t.Skip("chromium not installed: skipping the browser test (set SWITCHBOARD_REQUIRE_BROWSER=1 to make this a failure)")
	}
	profile := t.TempDir()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 800),
	)
	ctx, cancelTimeout := context.WithTimeout(context.Background(), 4*time.Minute)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	root, cancelRoot := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelRoot()
		cancelAlloc()
		cancelTimeout()
	})
	require.NoError(t, chromedp.Do(root), "start chromium at %s", path)
	return root
}

// tab is one user's page in its own browser context (own localStorage).
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
	base string

	mu         sync.Mutex
	exceptions []string
	console    sync.WaitGroup
}

func openTab(t *testing.T, root context.Context, name, base string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(root, chromedp.WithNewBrowserContext())
	b := &tab{t: t, name: name, ctx: ctx, base: base}
	msgs := chromedp.Console(ctx) // opens the tab and subscribes before any page runs
	b.console.Add(1)
	go func() {
		defer b.console.Done()
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() {
				b.mu.Lock()
				b.exceptions = append(b.exceptions, m.String())
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		b.console.Wait()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, e := range b.exceptions {
			t.Errorf("%s: uncaught JavaScript exception: %s", b.name, e)
		}
	})
	b.do(chromedp.EmulateViewport(1280, 800))
	return b
}

func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\n%s", b.name, err, b.pageText())
	}
}

func (b *tab) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base + path))
}

// waitJS waits until the JavaScript expression is truthy.
func (b *tab) waitJS(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait+time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(browserWait))); err != nil {
		b.t.Fatalf("%s: waiting for %s: %v\npage text:\n%s", b.name, what, err, b.pageText())
	}
}

// waitText waits until the element matched by sel contains text.
func (b *tab) waitText(sel, text string) {
	b.t.Helper()
	b.waitJS(fmt.Sprintf("%q in %s", text, sel), fmt.Sprintf(`[...document.querySelectorAll(%s)].some(e => e.offsetParent !== null && e.textContent.includes(%s))`, strconv.Quote(sel), strconv.Quote(text)))
}

func evalJS[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("%s: evaluate %s: %v", b.name, expr, err)
	}
	return v
}

func (b *tab) pageText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(no page text: " + err.Error() + ")"
	}
	return s
}

// typeInto focuses the field and types text as key events (so Enter is a
// real key press, as a person would send it).
func (b *tab) typeInto(sel, text string) {
	b.t.Helper()
	b.do(chromedp.Focus(chromedp.CSS(sel)), chromedp.SendKeys(chromedp.CSS(sel), text))
}

func (b *tab) waitOnline() {
	b.t.Helper()
	b.waitJS("connected", `document.querySelector("#status").classList.contains("status-online")`)
}

// setValue sets a field's value as an edit would (with an input event).
func (b *tab) setValue(sel, v string) {
	b.t.Helper()
	evalJS[chromedp.Void](b, fmt.Sprintf(`(() => { const e = document.querySelector(%s); e.value = %s; e.dispatchEvent(new Event("input", {bubbles: true})); })()`, strconv.Quote(sel), strconv.Quote(v)))
}

func (b *tab) click(sel string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// shot saves a screenshot of the viewport to dir/name.png and returns it.
func (b *tab) shot(dir, name string) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, browserWait)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(b.t, err, "%s: screenshot", b.name)
	require.NoError(b.t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
	return png
}

// checkLayout asserts that the page fits the viewport width (no sideways
// scrolling) and that every form control has a label.
func (b *tab) checkLayout(viewport string) {
	b.t.Helper()
	over := evalJS[int](b, `document.documentElement.scrollWidth - window.innerWidth`)
	if over > 0 {
		wide := evalJS[[]string](b, `[...document.querySelectorAll("body *")].filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).slice(0, 8).map(e => e.tagName + "#" + e.id + "." + e.className)`)
		b.t.Fatalf("%s at %s: the page is %dpx wider than the viewport; widest elements: %v", b.name, viewport, over, wide)
	}
	unlabelled := evalJS[[]string](b, `[...document.querySelectorAll("input, select, textarea")]
		.filter(e => e.offsetParent !== null && !(e.labels && e.labels.length) && !e.getAttribute("aria-label"))
		.map(e => e.id || e.name || e.outerHTML)`)
	require.Empty(b.t, unlabelled, "%s: form controls without a label", b.name)
}

func artifactsDir(t *testing.T) string {
	dir := os.Getenv("SWITCHBOARD_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	dir = filepath.Join(dir, "supportdesk-browser")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// TestBrowserPages drives the customer widget, the agent console and the
// supervisor view in a real browser: a customer chats with an agent who
// accepts the offer in another browser context; the customer's page
// reconnects by itself, reloads and keeps the history, and gets a message
// sent while it was away filled in; the supervisor watches; a VIP who
// arrived after a standard customer is offered first; when the first
// customer comes back with a second conversation, the agent console shows
// the first one under "Earlier conversations".
func TestBrowserPages(t *testing.T) {
	t0 := time.Now()
	step := func(what string) { t.Logf("%6.2fs  %s", time.Since(t0).Seconds(), what) }
	root := browser(t)
	cfg := testConfig()
	cfg.OfferTimeout = 30 * time.Second
	cfg.Tiers[0].FirstResponse = 2 * time.Second // a VIP SLA warning and breach for the supervisor view
	srv := startServer(t, cfg)
	base := srv.URL()
	shots := artifactsDir(t)

	step("supervisor signs in")
	sup := openTab(t, root, "supervisor", base)
	sup.open("/supervisor")
	sup.checkLayout("1280x800")
	sup.typeInto("#name", "Sue")
	sup.click("#login-form button[type=submit]")
	sup.waitOnline()

	step("a standard customer opens the widget, starts a chat and writes")
	ann := openTab(t, root, "customer ann", base)
	ann.open("/")
	ann.checkLayout("1280x800")
	ann.typeInto("#name", "Ann")
	ann.click("#start")
	ann.waitText("#queue-position", "1")
	ann.waitText("#conv-state", "Waiting")
	ann.typeInto("#composer-text", "Hello, my order #1234 has not arrived\n")
	ann.waitJS("the message echoed with its offset", `document.querySelector("#messages li.msg.mine[data-offset='1']") !== null`)
	require.Empty(t, evalJS[string](ann, `document.querySelector("#composer-text").value`), "Enter sent the message and cleared the box")

	step("an agent signs in in another browser context and accepts the offer")
	bob := openTab(t, root, "agent bob", base)
	bob.open("/agent")
	bob.checkLayout("1280x800")
	bob.typeInto("#name", "Bob")
	bob.setValue("#capacity", "2")
	bob.click("#login-form button[type=submit]")
	bob.waitText("#offers .offer-name", "Ann")
	bob.waitText("#offers .left", "moves on in")
	bob.click("#offers .offer .accept")
	bob.waitText("#messages .msg.theirs .text", "Hello, my order #1234 has not arrived")
	bob.waitJS("offer gone after accepting", `document.querySelectorAll("#offers li").length === 0`)
	ann.waitText("#agent-line", "Bob")

	step("the agent replies; the customer sees it and a read tick")
	bob.typeInto("#composer-text", "Sorry about that, Ann. Let me check the tracking.\n")
	ann.waitText("#messages .msg.theirs .text", "Let me check the tracking")
	ann.waitJS("read tick on the customer's message", `document.querySelector("#messages li.msg.mine .tick.read") !== null`)

	step("typing indicator")
	ann.typeInto("#composer-text", "It was")
	bob.waitText("#typing", "is typing")
	ann.setValue("#composer-text", "")
	bob.waitJS("typing indicator cleared", `document.querySelector("#typing").textContent === ""`)

	step("the customer's connection drops and comes back by itself")
	evalJS[chromedp.Void](ann, `Desk.active.ws.close()`)
	ann.waitJS("offline notice", `document.querySelector("#status").classList.contains("status-offline")`)
	ann.waitOnline()
	bob.typeInto("#composer-text", "Still there? I am on it.\n")
	ann.waitText("#messages .msg.theirs .text", "Still there?")

	step("the customer reloads: the history is still there")
	ann.do(chromedp.Reload())
	ann.waitText("#messages .msg.theirs .text", "Let me check the tracking")
	ann.waitText("#messages .msg.mine .text", "my order #1234")
	ann.waitOnline()
	ann.waitText("#agent-line", "Bob")

	step("the customer leaves; a message sent meanwhile is filled in on return, once")
	ann.open("/static/app.css")
	bob.typeInto("#composer-text", "It left our warehouse yesterday and arrives tomorrow.\n")
	bob.waitText("#messages .msg.mine .text", "arrives tomorrow")
	ann.open("/")
	ann.waitText("#messages .msg.theirs .text", "arrives tomorrow")
	require.Equal(t, []int{1, 2, 3, 4}, evalJS[[]int](ann, `[...document.querySelectorAll("#messages li.msg[data-offset]")].map(e => +e.dataset.offset)`), "each message shown once, in order")

	ann.typeInto("#composer-text", "Great, thank you!\n")
	bob.waitText("#messages .msg.theirs .text", "Great, thank you!")
	ann.waitJS("all the customer's messages read", `document.querySelectorAll("#messages li.msg.mine").length === 2 && document.querySelectorAll("#messages li.msg.mine .tick:not(.read)").length === 0`)
	custPNG := ann.shot(shots, "customer")

	step("the server asks for a reload (the stored history epoch is stale): a clear notice, history refetched")
	evalJS[chromedp.Void](ann, `(() => { const k = "supportdesk.customer"; const s = JSON.parse(localStorage.getItem(k)); s.transcript.epoch = "stale"; s.transcript.msgs.forEach(m => m.epoch = "stale"); localStorage.setItem(k, JSON.stringify(s)); })()`)
	ann.do(chromedp.Reload())
	ann.waitText("#banner", "reload the conversation")
	ann.waitText("#messages .note", "reloaded")
	ann.waitText("#messages .msg.theirs .text", "arrives tomorrow")
	require.Equal(t, []int{1, 2, 3, 4, 5}, evalJS[[]int](ann, `[...document.querySelectorAll("#messages li.msg[data-offset]")].map(e => +e.dataset.offset)`), "the whole history again, once")
	ann.click("#banner button")
	ann.waitJS("notice dismissed", `document.querySelector("#banner").hidden`)

	step("the node says it restored its delivery (sync) after the page missed a message: the page resumes and fills it in")
	// A sync only comes after a Redis outage, so the test makes the page
	// forget its last message and hands it the server's sync envelope.
	require.Equal(t, []int{1, 2, 3, 4}, evalJS[[]int](ann, `(() => {
		const conv = JSON.parse(localStorage.getItem("supportdesk.customer")).conv;
		const t = Desk.Transcript.of(conv);
		t.msgs.delete(5); t.contig = 4; t.target = 4; t.onChange();
		const shown = [...document.querySelectorAll("#messages li.msg[data-offset]")].map(e => +e.dataset.offset);
		Desk.active.ws.onmessage({data: JSON.stringify({type: "sync", conv, offset: 5, epoch: t.epoch, ts: Date.now()})});
		return shown;
	})()`), "the page lost its last message")
	ann.waitJS("the missed message filled in after the sync", `[...document.querySelectorAll("#messages li.msg[data-offset]")].map(e => e.dataset.offset).join() === "1,2,3,4,5"`)
	ann.waitJS("the resume batch ended (resumed)", `!document.querySelector("#messages").hasAttribute("aria-busy")`)

	step("the supervisor sees the conversation and watches it")
	sup.waitText("#convs tbody", "Ann")
	sup.waitText("#agents tbody", "a-bob")
	sup.click("#convs button.watch-btn")
	sup.waitText("#watch .msg .text", "arrives tomorrow")
	sup.waitText("#watch .msg .text", "Great, thank you!")

	step("priority: standard, then VIP queue while the agent is away")
	bob.click(`#presence input[value="away"]`)
	sup.waitJS("agent away in stats", `[...document.querySelectorAll("#agents tbody tr")].some(r => r.textContent.includes("a-bob") && r.textContent.includes("away"))`)
	sam := openTab(t, root, "customer sam", base)
	sam.open("/")
	sam.typeInto("#name", "Sam")
	sam.click("#start")
	sam.waitText("#queue-position", "1")
	vera := openTab(t, root, "customer vera", base)
	vera.open("/")
	vera.typeInto("#name", "Vera")
	vera.click(`#setup-form input[value="vip"]`)
	vera.click("#start")
	vera.waitText("#queue-position", "1")
	sam.waitText("#queue-position", "2")
	vera.typeInto("#composer-text", "I need help with my account, please\n")
	sup.waitJS("both tiers waiting", `(() => { const rows = [...document.querySelectorAll("#tiers tbody tr")]; return rows.length === 3 && rows[0].textContent.includes("VIP") && rows[0].children[1].textContent === "1" && rows[2].children[1].textContent === "1"; })()`)
	sup.waitJS("VIP first-response SLA warning and breach", `document.querySelector("#sla li.sla-breached") !== null && document.querySelector("#sla li.sla-warning") !== null`)
	sup.waitText("#sla li.sla-breached", "Vera")
	require.Equal(t, 0, evalJS[int](bob, `document.querySelectorAll("#offers li").length`), "no offers while away")

	step("the agent comes back online: the VIP is offered first")
	bob.click(`#presence input[value="online"]`)
	bob.waitText("#offers .offer-name", "Vera")
	require.Equal(t, []string{"Vera"}, evalJS[[]string](bob, `[...document.querySelectorAll("#offers .offer-name")].map(e => e.textContent)`), "the VIP is offered first; the standard customer waits (agent at capacity)")
	require.True(t, evalJS[bool](bob, `document.querySelector("#offers li.offer").classList.contains("tier-vip")`))
	sam.waitText("#queue-position", "1")
	bob.waitText("#offers .left", "moves on in")

	step("screenshots at 1280x800")
	ann.shot(shots, "customer-later")
	vera.shot(shots, "customer-waiting")
	agentPNG := bob.shot(shots, "agent")
	supPNG := sup.shot(shots, "supervisor")

	step("phone-sized viewport: nothing overflows sideways")
	for _, b := range []*tab{ann, vera, bob, sup} {
		b.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
		b.checkLayout("390x844")
		b.shot(shots, strings.ReplaceAll(b.name, " ", "-")+"-phone")
		b.do(chromedp.EmulateViewport(1280, 800))
	}

	step("the agent accepts the VIP and resolves Ann's conversation; the backlog drains")
	bob.click("#offers .offer .accept")
	vera.waitText("#agent-line", "Bob")
	bob.waitText("#messages .msg.theirs .text", "I need help with my account")
	bob.click(`#convs button.conv:not(.selected)`)
	bob.waitText("#pane-name", "Ann")
	bob.click("#resolve")
	ann.waitText("#conv-state", "Ended")
	ann.waitText("#messages .note", "resolved")
	bob.waitText("#offers .offer-name", "Sam")

	step("the agent sends the VIP back to the queue")
	bob.click(`#convs button.conv:not(.ended)`)
	bob.waitText("#pane-name", "Vera")
	bob.click("#to-queue")
	vera.waitText("#messages .note", "back at the front of the queue")
	vera.waitText("#conv-state", "Waiting")
	bob.waitJS("Vera left the agent's list", `![...document.querySelectorAll("#convs .conv-name")].some(e => e.textContent === "Vera")`)

	step("the agent takes the next customer: no earlier conversations")
	bob.click("#offers .offer .accept")
	bob.waitText("#pane-name", "Sam")
	sam.waitText("#agent-line", "Bob")
	bob.click("#history > summary")
	bob.waitText("#history-body .history-empty", "No earlier conversations")
	bob.waitText("#history-count", "0")

	step("the first customer comes back with a second conversation: the agent sees the first one in Earlier conversations")
	ann.click("#again")
	bob.waitText("#offers .offer-name", "Ann")
	bob.click("#offers .offer .accept")
	bob.waitText("#pane-name", "Ann")
	ann.waitText("#agent-line", "Bob")
	bob.waitText("#history-count", "1")
	bob.waitText("#history .history-conv .history-head", "resolved")
	bob.waitText("#history .history-conv .history-agent", "you")
	bob.waitText("#history .history-conv .history-messages .msg .text", "Hello, my order #1234 has not arrived")
	require.Equal(t, []int{1, 2, 3, 4, 5}, evalJS[[]int](bob, `[...document.querySelectorAll("#history .history-conv .history-messages li.msg")].map(e => +e.dataset.offset)`), "the first conversation's whole transcript, in order")
	require.Equal(t, 0, evalJS[int](bob, `document.querySelectorAll("#messages li.msg").length`), "the new conversation's own transcript is separate (empty so far)")
	ann.typeInto("#composer-text", "Hi again, a question about the same order\n")
	bob.waitText("#messages .msg.theirs .text", "Hi again")
	require.Equal(t, 1, evalJS[int](bob, `document.querySelectorAll("#history .history-conv").length`), "the history lists only the earlier conversation")

	step("a failed history request shows an error in the panel, and Try again asks the server again")
	evalJS[chromedp.Void](bob, `(() => {
		const conv = document.querySelector("#convs button.conv.selected").dataset.focusKey.slice(2);
		Desk.active.ws.onmessage({data: JSON.stringify({type: "error", code: "unavailable", ref: "history", conv, message: "history unavailable; retry"})});
	})()`)
	bob.waitText("#history-body .history-error", "history unavailable")
	bob.click("#history-body .history-retry")
	bob.waitText("#history .history-conv .history-messages .msg .text", "Hello, my order #1234 has not arrived")
	require.Equal(t, 0, evalJS[int](bob, `document.querySelectorAll("#toasts .toast.error").length`), "the history error is shown in the panel, not as a toast")
	bob.shot(shots, "agent-history")
	bob.checkLayout("1280x800 with the history open")
	bob.do(chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	bob.checkLayout("390x844 with the history open")
	bob.shot(shots, "agent-history-phone")
	bob.do(chromedp.EmulateViewport(1280, 800))

	if os.Getenv("SWITCHBOARD_UPDATE_SCREENSHOTS") == "1" {
		docs := filepath.Join("..", "..", "..", "..", "docs", "screenshots")
		require.NoError(t, os.MkdirAll(docs, 0o755))
		for name, png := range map[string][]byte{"customer": custPNG, "agent": agentPNG, "supervisor": supPNG} {
			require.NoError(t, os.WriteFile(filepath.Join(docs, name+".png"), png, 0o644))
		}
	}
	step("done; screenshots in " + shots)
}
