"""The domain: the tables (models), what a valid user is (schemas), the user
operations both front ends share (users), and their history (audit)."""
