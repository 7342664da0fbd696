// A minimal JSON reader for edgeseq manifests (objects, arrays, strings, numbers, true/false/null). Values that
// are missing or of another kind throw std::runtime_error with the key, which es_open turns into an error code.
#pragma once

#include <cstdlib>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace es_json {

struct Value {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  bool b = false;
  double n = 0;
  std::string s;
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value>> fields;

  bool has(const std::string& key) const {
    if (kind != Object) return false;
    for (const auto& f : fields)
      if (f.first == key) return true;
    return false;
  }
  const Value& operator[](const std::string& key) const {
    if (kind != Object) throw std::runtime_error("expected an object around '" + key + "'");
    for (const auto& f : fields)
      if (f.first == key) return f.second;
    throw std::runtime_error("no '" + key + "' field");
  }
  const Value& at(size_t i) const {
    if (kind != Array || i >= items.size()) throw std::runtime_error("expected an array of at least " + std::to_string(i + 1) + " items");
    return items[i];
  }
  size_t size() const {
    if (kind != Array) throw std::runtime_error("expected an array");
    return items.size();
  }
  const std::string& str() const {
    if (kind != String) throw std::runtime_error("expected a string");
    return s;
  }
  double num() const {
    if (kind != Number) throw std::runtime_error("expected a number");
    return n;
  }
  bool is_null() const { return kind == Null; }
  const std::vector<std::pair<std::string, Value>>& object() const {
    if (kind != Object) throw std::runtime_error("expected an object");
    return fields;
  }
};

namespace detail {
struct Parser {
  const std::string& t;
  size_t i = 0;
  std::string err;
  void ws() {
    while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\r' || t[i] == '\t')) ++i;
  }
  bool lit(const char* w) {
    size_t k = 0;
    while (w[k]) {
      if (i + k >= t.size() || t[i + k] != w[k]) return false;
      ++k;
    }
    i += k;
    return true;
  }
  bool string(std::string* out) {
    if (t[i] != '"') return false;
    ++i;
    while (i < t.size() && t[i] != '"') {
      char c = t[i++];
      if (c == '\\') {
        if (i >= t.size()) return false;
        char e = t[i++];
        if (e == 'n') c = '\n';
        else if (e == 't') c = '\t';
        else if (e == 'r') c = '\r';
        else if (e == 'b') c = '\b';
        else if (e == 'f') c = '\f';
        else if (e == 'u') {  // \uXXXX: code points below 0x80 kept, others as UTF-8
          if (i + 4 > t.size()) return false;
          unsigned cp = static_cast<unsigned>(std::strtoul(t.substr(i, 4).c_str(), nullptr, 16));
          i += 4;
          if (cp < 0x80) out->push_back(static_cast<char>(cp));
          else if (cp < 0x800) { out->push_back(static_cast<char>(0xC0 | (cp >> 6))); out->push_back(static_cast<char>(0x80 | (cp & 0x3F))); }
          else { out->push_back(static_cast<char>(0xE0 | (cp >> 12))); out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F))); out->push_back(static_cast<char>(0x80 | (cp & 0x3F))); }
          continue;
        } else c = e;
      }
      out->push_back(c);
    }
    if (i >= t.size()) return false;
    ++i;
    return true;
  }
  bool value(Value* v, int depth) {
    if (depth > 64) { err = "nested too deeply"; return false; }
    ws();
    if (i >= t.size()) { err = "unexpected end"; return false; }
    char c = t[i];
    if (c == '{') {
      v->kind = Value::Object;
      ++i;
      ws();
      if (i < t.size() && t[i] == '}') { ++i; return true; }
      while (true) {
        ws();
        std::string key;
        if (i >= t.size() || !string(&key)) { err = "expected a key at " + std::to_string(i); return false; }
        ws();
        if (i >= t.size() || t[i] != ':') { err = "expected ':' at " + std::to_string(i); return false; }
        ++i;
        Value child;
        if (!value(&child, depth + 1)) return false;
        v->fields.emplace_back(key, std::move(child));
        ws();
        if (i < t.size() && t[i] == ',') { ++i; continue; }
        if (i < t.size() && t[i] == '}') { ++i; return true; }
        err = "expected ',' or '}' at " + std::to_string(i);
        return false;
      }
    }
    if (c == '[') {
      v->kind = Value::Array;
      ++i;
      ws();
      if (i < t.size() && t[i] == ']') { ++i; return true; }
      while (true) {
        Value child;
        if (!value(&child, depth + 1)) return false;
        v->items.push_back(std::move(child));
        ws();
        if (i < t.size() && t[i] == ',') { ++i; continue; }
        if (i < t.size() && t[i] == ']') { ++i; return true; }
        err = "expected ',' or ']' at " + std::to_string(i);
        return false;
      }
    }
    if (c == '"') {
      v->kind = Value::String;
      if (!string(&v->s)) { err = "unterminated string"; return false; }
      return true;
    }
    if (lit("true")) { v->kind = Value::Bool; v->b = true; return true; }
    if (lit("false")) { v->kind = Value::Bool; v->b = false; return true; }
    if (lit("null")) { v->kind = Value::Null; return true; }
    if (lit("NaN")) { v->kind = Value::Number; v->n = 0.0 / 0.0; return true; }
    if (lit("Infinity")) { v->kind = Value::Number; v->n = 1e308 * 10; return true; }
    if (lit("-Infinity")) { v->kind = Value::Number; v->n = -1e308 * 10; return true; }
    char* end = nullptr;
    double d = std::strtod(t.c_str() + i, &end);
    if (end == t.c_str() + i) { err = "unexpected character at " + std::to_string(i); return false; }
    i = static_cast<size_t>(end - t.c_str());
    v->kind = Value::Number;
    v->n = d;
    return true;
  }
};
}  // namespace detail

inline bool parse(const std::string& text, Value* out, std::string* err) {
  detail::Parser p{text};
  if (!p.value(out, 0)) { *err = p.err; return false; }
  p.ws();
  if (p.i != text.size()) { *err = "trailing characters at " + std::to_string(p.i); return false; }
  return true;
}

}  // namespace es_json
