"""The subscriber portal's domain: customers' own sign-in and profile, their scoped reads, their plan requests."""
