// Module options: each module type declares its options once (name, type,
// default, range or choices, help); config.json values are checked against the
// declaration with the field's path in every error, and written back from it.
#pragma once
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "strata/config.h"

namespace strata {

enum class OptionType { Int, Float, Bool, String };

struct OptionDecl {
  std::string name;
  OptionType type = OptionType::Int;
  OptionValue def;
  std::string help;
  double min = -std::numeric_limits<double>::infinity();  // Int and Float
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;  // String: the allowed values (empty: any)
};

OptionDecl int_option(std::string name, int64_t def, int64_t min, int64_t max, std::string help);
OptionDecl float_option(std::string name, double def, double min, double max, std::string help);
OptionDecl bool_option(std::string name, bool def, std::string help);
OptionDecl choice_option(std::string name, std::string def, std::vector<std::string> choices, std::string help);

// The value of `v` for option `d`, or an error "<field>: ..." naming what was
// expected. Integers given as 2048.0 are accepted, 2048.5 is not.
OptionValue parse_option(const OptionDecl& d, const nlohmann::json& v, const std::string& field);
// Checks a value set in code (type, range, choices) the same way.
void check_option(const OptionDecl& d, const OptionValue& v, const std::string& field);
nlohmann::ordered_json option_json(const OptionValue& v);
std::string option_str(const OptionValue& v);  // for messages and `strata info`

// Typed reads of resolved options (every declared option is present; a
// missing or mistyped one is a programming error and throws).
int64_t opt_int(const Options& o, const std::string& name);
double opt_float(const Options& o, const std::string& name);
bool opt_bool(const Options& o, const std::string& name);
const std::string& opt_string(const Options& o, const std::string& name);

}  // namespace strata
