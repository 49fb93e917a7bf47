// Building the page with DOM calls only (THREATS W1).
//
// h() is the one way the client makes elements: text becomes text nodes, attributes go
// through setAttribute, handlers through addEventListener. There is no innerHTML,
// insertAdjacentHTML, document.write or eval anywhere in the client, so text from the
// server (messages, names, file names, topics) can never become markup. Inline style
// attributes are refused too: the server's CSP (default-src 'self') would block them;
// styling is by class names from zastava.css.

const PROPERTIES = new Set([
  "value",
  "checked",
  "disabled",
  "type",
  "name",
  "id",
  "htmlFor",
  "placeholder",
  "autocomplete",
  "required",
  "readOnly",
  "multiple",
  "selected",
  "hidden",
  "tabIndex",
  "title",
  "rows",
  "max",
  "download",
  "spellcheck",
]);

/**
 * h("button", {class: "primary", text: "Send", onclick: fn}, child, "text", [more])
 * Children may be nodes, strings (text), arrays, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") {
      el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
    } else if (key === "text") {
      el.textContent = String(value);
    } else if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
    } else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else if (key === "style" || key.startsWith("on") || key === "srcdoc") {
      throw new Error(`h(): attribute ${key} is not allowed`);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all of ``parent``'s children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

export function byId(id) {
  return document.getElementById(id);
}

/** A labelled form field: <label for=id>text</label><input id=id ...>. */
export function field(label, input, hint) {
  if (!input.id) input.id = uniqueId("f");
  const hintEl = hint ? h("p", { class: "hint", id: `${input.id}-hint`, text: hint }) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h(
    "div",
    { class: "field" },
    h("label", { htmlFor: input.id, text: label }),
    input,
    hintEl,
  );
}

let counter = 0;
export function uniqueId(prefix) {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** Call ``fn`` at most once per ``ms`` (the first call goes through at once). */
export function throttle(fn, ms) {
  let last = 0;
  return (...args) => {
    const now = Date.now();
    if (now - last >= ms) {
      last = now;
      fn(...args);
    }
  };
}

/** Call ``fn`` ``ms`` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_ELEMENTS = new Set(["svg", "g", "path", "rect"]);
const SVG_ATTRIBUTES = new Set([
  "width",
  "height",
  "viewBox",
  "d",
  "fill",
  "stroke",
  "transform",
  "x",
  "y",
  "class",
  "shape-rendering",
]);

/**
 * An <svg> element from SVG text the edge rendered (the TOTP QR code), without markup
 * parsing into the page: DOMParser reads it as XML into an inert document, and the nodes
 * are rebuilt in the SVG namespace keeping only the elements and attributes a QR code
 * uses (no script, no foreignObject, no href, no event handler, no style). segno's inline
 * SVG has no xmlns, which is why the nodes are rebuilt rather than imported as they are.
 */
export function safeSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.localName !== "svg" || doc.getElementsByTagName("parsererror").length) {
    throw new Error("not an SVG image");
  }
  const copy = (node) => {
    const el = document.createElementNS(SVG_NS, node.localName);
    for (const attr of Array.from(node.attributes)) {
      if (SVG_ATTRIBUTES.has(attr.localName) && !attr.value.includes("url(")) {
        el.setAttribute(attr.localName, attr.value);
      }
    }
    for (const child of Array.from(node.children)) {
      if (SVG_ELEMENTS.has(child.localName)) el.append(copy(child));
    }
    return el;
  };
  const svg = copy(root);
  if (!svg.hasAttribute("viewBox") && svg.hasAttribute("width") && svg.hasAttribute("height")) {
    svg.setAttribute("viewBox", `0 0 ${svg.getAttribute("width")} ${svg.getAttribute("height")}`);
  }
  return svg;
}
