package wrapper

// WithCheckers returns cfg with cs run as active checks after those of
// cfg.Checks, as fakes of the tests.
func WithCheckers(cfg Config, cs ...Checker) Config {
	cfg.checkers = append(append([]Checker(nil), cfg.checkers...), cs...)
	return cfg
}
