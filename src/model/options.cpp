#include "model/options.h"

#include <algorithm>
#include <cmath>

#include "strata/error.h"

namespace strata {

OptionDecl int_option(std::string name, int64_t def, int64_t min, int64_t max, std::string help) {
  OptionDecl d{std::move(name), OptionType::Int, def, std::move(help)};
  d.min = static_cast<double>(min);
  d.max = static_cast<double>(max);
  return d;
}

OptionDecl float_option(std::string name, double def, double min, double max, std::string help) {
  OptionDecl d{std::move(name), OptionType::Float, def, std::move(help)};
  d.min = min;
  d.max = max;
  return d;
}

OptionDecl bool_option(std::string name, bool def, std::string help) {
  return {std::move(name), OptionType::Bool, def, std::move(help)};
}

OptionDecl choice_option(std::string name, std::string def, std::vector<std::string> choices, std::string help) {
  OptionDecl d{std::move(name), OptionType::String, std::move(def), std::move(help)};
  d.choices = std::move(choices);
  return d;
}

namespace {

std::string choices_text(const std::vector<std::string>& c) {
  std::string s;
  for (size_t i = 0; i < c.size(); ++i) s += (i == 0 ? "" : i + 1 == c.size() ? " or " : ", ") + c[i];
  return s;
}

std::string number_text(double v) {
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return cat(static_cast<int64_t>(v));
  return cat(v);
}

}  // namespace

void check_option(const OptionDecl& d, const OptionValue& v, const std::string& field) {
  switch (d.type) {
    case OptionType::Int:
    case OptionType::Float: {
      double x;
      if (d.type == OptionType::Int) {
        if (!std::holds_alternative<int64_t>(v)) fail(field, ": expected an integer");
        x = static_cast<double>(std::get<int64_t>(v));
      } else {
        if (!std::holds_alternative<double>(v)) fail(field, ": expected a number");
        x = std::get<double>(v);
        if (!std::isfinite(x)) fail(field, ": must be a finite number");
      }
      if (x < d.min || x > d.max)
        fail(field, ": must be in [", number_text(d.min), ", ", number_text(d.max), "] (got ", option_str(v), ")");
      return;
    }
    case OptionType::Bool:
      if (!std::holds_alternative<bool>(v)) fail(field, ": expected true or false");
      return;
    case OptionType::String: {
      if (!std::holds_alternative<std::string>(v)) fail(field, ": expected a string");
      const std::string& s = std::get<std::string>(v);
      if (!d.choices.empty() && std::find(d.choices.begin(), d.choices.end(), s) == d.choices.end())
        fail(field, ": '", s, "' is not ", choices_text(d.choices));
      return;
    }
  }
}

OptionValue parse_option(const OptionDecl& d, const nlohmann::json& v, const std::string& field) {
  OptionValue out;
  switch (d.type) {
    case OptionType::Int:
      if (v.is_number_integer()) {
        if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
          fail(field, ": value is out of range");
        out = v.get<int64_t>();
      } else if (v.is_number_float() && std::isfinite(v.get<double>()) && v.get<double>() == std::floor(v.get<double>()) &&
                 std::fabs(v.get<double>()) < 9.0e15) {
        out = static_cast<int64_t>(v.get<double>());
      } else {
        fail(field, ": expected an integer, got ", v.is_number() ? v.dump() : std::string(v.type_name()));
      }
      break;
    case OptionType::Float:
      if (!v.is_number()) fail(field, ": expected a number, got ", v.type_name());
      out = v.get<double>();
      break;
    case OptionType::Bool:
      if (!v.is_boolean()) fail(field, ": expected true or false, got ", v.type_name());
      out = v.get<bool>();
      break;
    case OptionType::String:
      if (!v.is_string()) fail(field, ": expected a string, got ", v.type_name());
      out = v.get<std::string>();
      break;
  }
  check_option(d, out, field);
  return out;
}

nlohmann::ordered_json option_json(const OptionValue& v) {
  return std::visit([](const auto& x) { return nlohmann::ordered_json(x); }, v);
}

std::string option_str(const OptionValue& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (const auto* i = std::get_if<int64_t>(&v)) return cat(*i);
  return cat(std::get<double>(v));
}

namespace {

template <class T>
const T& get_typed(const Options& o, const std::string& name) {
  auto it = o.find(name);
  if (it == o.end()) fail("module option '", name, "' is not set (not declared by the module?)");
  const T* v = std::get_if<T>(&it->second);
  if (!v) fail("module option '", name, "' has another type than the module reads");
  return *v;
}

}  // namespace

int64_t opt_int(const Options& o, const std::string& name) { return get_typed<int64_t>(o, name); }
double opt_float(const Options& o, const std::string& name) { return get_typed<double>(o, name); }
bool opt_bool(const Options& o, const std::string& name) { return get_typed<bool>(o, name); }
const std::string& opt_string(const Options& o, const std::string& name) { return get_typed<std::string>(o, name); }

}  // namespace strata
