"""One module per calendar provider, each implementing calendars.model.Provider."""
