"""Users: look-ups for the API and the gateway, and the admin CLI's creation path."""

from __future__ import annotations

from sqlalchemy import select

from huddle.db.models import User
from huddle.services.unit import Database


class UserService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, user_id: int) -> User | None:
        async with self._db.read() as session:
            return await session.get(User, user_id)

    async def exists(self, user_id: int) -> bool:
        async with self._db.read() as session:
            return (await session.scalar(select(User.id).where(User.id == user_id))) is not None
