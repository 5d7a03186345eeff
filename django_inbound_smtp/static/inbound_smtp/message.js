/* Tabs of the inbound message page (WAI-ARIA tabs pattern): arrow keys, Home and End
   move between tabs; the hash (#panel-<id>) selects one and survives a reload.
   Without this script every panel shows. */
"use strict";
(function () {
    function setUp(container) {
        const tabs = Array.from(container.querySelectorAll('[role="tab"]'));
        if (!tabs.length) {
            return;
        }
        function panelOf(tab) {
            return document.getElementById(tab.getAttribute("aria-controls"));
        }
        function select(tab, focus) {
            tabs.forEach(function (other) {
                const selected = other === tab;
                other.setAttribute("aria-selected", selected ? "true" : "false");
                other.tabIndex = selected ? 0 : -1;
                panelOf(other).hidden = !selected;
            });
            if (focus) {
                tab.focus();
            }
        }
        function fromHash() {
            // A panel (#panel-source) or anything in one (#L12, a source line).
            const id = decodeURIComponent(window.location.hash.slice(1));
            const target = id && document.getElementById(id);
            const panel = target && target.closest('[role="tabpanel"]');
            return panel && tabs.find(function (tab) {
                return tab.getAttribute("aria-controls") === panel.id;
            });
        }
        container.classList.add("js-tabs");
        tabs.forEach(function (tab, index) {
            tab.addEventListener("click", function (event) {
                event.preventDefault();
                select(tab, true);
                history.replaceState(null, "", tab.getAttribute("href"));
            });
            tab.addEventListener("keydown", function (event) {
                const moves = {
                    ArrowRight: index + 1,
                    ArrowLeft: index - 1,
                    Home: 0,
                    End: tabs.length - 1,
                };
                if (!(event.key in moves)) {
                    return;
                }
                event.preventDefault();
                const next = tabs[(moves[event.key] + tabs.length) % tabs.length];
                select(next, true);
                history.replaceState(null, "", next.getAttribute("href"));
            });
        });
        const chosen = fromHash() || container.querySelector("[data-default-tab]") || tabs[0];
        select(chosen, false);
        window.addEventListener("hashchange", function () {
            const tab = fromHash();
            if (tab) {
                select(tab, false);
            }
        });
    }
    function start() {
        document.querySelectorAll("[data-inbound-tabs]").forEach(setUp);
    }
    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
